/* The benchmark's anchor: the smallest multi-threaded libfcgi responder, a fixed JSON answer
 * to every request. bench.sh puts it behind the same nginx configuration as the gateway, so
 * the gateway's requests/s read as a fraction of what libfcgi + nginx allow on this machine.
 * Usage: fcgi_anchor SOCKET THREADS */
#include <fcgiapp.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static int listen_fd;

static void *serve(void *unused) {
    FCGX_Request request;
    FCGX_InitRequest(&request, listen_fd, 0);
    static const char answer[] = "Status: 200 OK\r\nContent-Type: application/json\r\nContent-Length: 25\r\n\r\n{\"styles\": [\"realistic\"]}";
    while (FCGX_Accept_r(&request) >= 0) {
        FCGX_PutStr(answer, sizeof answer - 1, request.out);
        FCGX_Finish_r(&request);
    }
    return unused;
}

int main(int argc, char **argv) {
    if (argc != 3) return 64;
    FCGX_Init();
    unlink(argv[1]);
    listen_fd = FCGX_OpenSocket(argv[1], 4096);
    if (listen_fd < 0) return 1;
    chmod(argv[1], 0660);
    int threads = atoi(argv[2]);
    pthread_t thread;
    for (int i = 1; i < threads; i++) pthread_create(&thread, NULL, serve, NULL);
    serve(NULL);
    return 0;
}
