#ifndef CFASTCGI_SHIM_H
#define CFASTCGI_SHIM_H
#include <stdlib.h>
#include <fcgiapp.h>
#include <sys/eventfd.h>

/// POLLRDHUP is hidden behind _GNU_SOURCE; its value is fixed by the Linux ABI.
static const short cfastcgi_pollrdhup = 0x2000;

/// An eventfd for a task to wake the FastCGI thread that waits for its response.
static inline int cfastcgi_wake_fd_new(void) {
    return eventfd(0, EFD_CLOEXEC);
}

/// Heap-allocates a request: libfcgi keeps a pointer to it between calls, so it must not move.
static inline FCGX_Request *cfastcgi_request_new(int listen_fd) {
    FCGX_Request *request = (FCGX_Request *)calloc(1, sizeof(FCGX_Request));
    if (request != NULL && FCGX_InitRequest(request, listen_fd, 0) != 0) {
        free(request);
        return NULL;
    }
    return request;
}

static inline void cfastcgi_request_free(FCGX_Request *request) {
    FCGX_Free(request, 1);
    free(request);
}

/// The request's connection to nginx: polled to notice a client that went away mid-wait.
static inline int cfastcgi_request_fd(const FCGX_Request *request) {
    return request->ipcFd;
}
#endif
