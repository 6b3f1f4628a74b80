#ifndef CIMAGECODECS_SHIM_H
#define CIMAGECODECS_SHIM_H
// Thin wrappers over Debian's libpng (simplified API), libwebp and libjpeg-turbo (TurboJPEG):
// every image is decoded to 8-bit RGBA and encoded from it. Buffers are malloc'd: free() them.
// Each decoder checks the size the decoder itself reads against max_pixels before allocating:
// a header check in front of it is not trusted with the allocation.
#include <png.h>
#include <webp/decode.h>
#include <webp/encode.h>
#include <turbojpeg.h>
#include <stdlib.h>
#include <string.h>

static inline int cgw_png_decode_rgba(const unsigned char *data, size_t size, size_t max_pixels, unsigned char **pixels, int *width, int *height) {
    png_image image;
    memset(&image, 0, sizeof image);
    image.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&image, data, size)) return 0;
    if (image.width == 0 || image.height == 0 || (size_t)image.width * (size_t)image.height > max_pixels) { png_image_free(&image); return 0; }
    image.format = PNG_FORMAT_RGBA;
    unsigned char *buffer = malloc(PNG_IMAGE_SIZE(image));
    if (buffer == NULL) { png_image_free(&image); return 0; }
    if (!png_image_finish_read(&image, NULL, buffer, 0, NULL)) { free(buffer); png_image_free(&image); return 0; }
    *pixels = buffer;
    *width = (int)image.width;
    *height = (int)image.height;
    return 1;
}

static inline int cgw_png_encode_rgba(const unsigned char *rgba, int width, int height, unsigned char **out, size_t *size) {
    png_image image;
    memset(&image, 0, sizeof image);
    image.version = PNG_IMAGE_VERSION;
    image.width = (png_uint_32)width;
    image.height = (png_uint_32)height;
    image.format = PNG_FORMAT_RGBA;
    size_t needed = 0;
    if (!png_image_write_to_memory(&image, NULL, &needed, 0, rgba, 0, NULL)) return 0;
    unsigned char *buffer = malloc(needed);
    if (buffer == NULL) return 0;
    if (!png_image_write_to_memory(&image, buffer, &needed, 0, rgba, 0, NULL)) { free(buffer); return 0; }
    *out = buffer;
    *size = needed;
    return 1;
}

static inline int cgw_webp_decode_rgba(const unsigned char *data, size_t size, size_t max_pixels, unsigned char **pixels, int *width, int *height) {
    if (!WebPGetInfo(data, size, width, height)) return 0;
    if (*width <= 0 || *height <= 0 || (size_t)*width * (size_t)*height > max_pixels) return 0;
    uint8_t *decoded = WebPDecodeRGBA(data, size, width, height);
    if (decoded == NULL) return 0;
    size_t bytes = (size_t)*width * (size_t)*height * 4;
    unsigned char *buffer = malloc(bytes);
    if (buffer != NULL) memcpy(buffer, decoded, bytes);
    WebPFree(decoded);
    if (buffer == NULL) return 0;
    *pixels = buffer;
    return 1;
}

static inline int cgw_webp_encode_rgba(const unsigned char *rgba, int width, int height, float quality, unsigned char **out, size_t *size) {
    uint8_t *encoded = NULL;
    size_t length = WebPEncodeRGBA(rgba, width, height, width * 4, quality, &encoded);
    if (length == 0 || encoded == NULL) return 0;
    unsigned char *buffer = malloc(length);
    if (buffer != NULL) memcpy(buffer, encoded, length);
    WebPFree(encoded);
    if (buffer == NULL) return 0;
    *out = buffer;
    *size = length;
    return 1;
}

static inline int cgw_jpeg_decode_rgba(const unsigned char *data, size_t size, size_t max_pixels, unsigned char **pixels, int *width, int *height) {
    tjhandle handle = tjInitDecompress();
    if (handle == NULL) return 0;
    int subsampling = 0, colorspace = 0;
    if (tjDecompressHeader3(handle, data, (unsigned long)size, width, height, &subsampling, &colorspace) != 0) { tjDestroy(handle); return 0; }
    if (*width <= 0 || *height <= 0 || (size_t)*width * (size_t)*height > max_pixels) { tjDestroy(handle); return 0; }
    unsigned char *buffer = malloc((size_t)*width * (size_t)*height * 4);
    if (buffer == NULL) { tjDestroy(handle); return 0; }
    int status = tjDecompress2(handle, data, (unsigned long)size, buffer, *width, *width * 4, *height, TJPF_RGBA, TJFLAG_ACCURATEDCT);
    tjDestroy(handle);
    if (status != 0) { free(buffer); return 0; }
    *pixels = buffer;
    return 1;
}

// JPEG has no alpha: the fourth byte of each pixel is ignored.
static inline int cgw_jpeg_encode_rgba(const unsigned char *rgba, int width, int height, int quality, unsigned char **out, size_t *size) {
    tjhandle handle = tjInitCompress();
    if (handle == NULL) return 0;
    unsigned char *encoded = NULL;
    unsigned long length = 0;
    int status = tjCompress2(handle, rgba, width, width * 4, height, TJPF_RGBX, &encoded, &length, TJSAMP_420, quality, TJFLAG_ACCURATEDCT);
    tjDestroy(handle);
    if (status != 0 || encoded == NULL) { if (encoded) tjFree(encoded); return 0; }
    unsigned char *buffer = malloc(length);
    if (buffer != NULL) memcpy(buffer, encoded, length);
    tjFree(encoded);
    if (buffer == NULL) return 0;
    *out = buffer;
    *size = (size_t)length;
    return 1;
}
#endif
