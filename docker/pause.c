/*
 * The pod sandbox's only process: it keeps the pod's namespaces alive, reaps children,
 * and exits at once on SIGINT or SIGTERM.  Built static (hack/images), so the image holds
 * nothing else.
 */
#include <signal.h>
#include <stddef.h>
#include <sys/wait.h>
#include <unistd.h>

static void leave(int sig) {
    (void)sig;
    _exit(0);
}

static void reap(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(void) {
    struct sigaction on_stop = {0};
    on_stop.sa_handler = leave;
    sigaction(SIGINT, &on_stop, NULL);
    sigaction(SIGTERM, &on_stop, NULL);

    struct sigaction on_child = {0};
    on_child.sa_handler = reap;
    on_child.sa_flags = SA_NOCLDSTOP;
    sigaction(SIGCHLD, &on_child, NULL);

    for (;;) {
        pause();
    }
}
