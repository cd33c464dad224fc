/* A minimal poll(2) PING server: the C reference peer for scripts/bench (issue 12).
 *
 * Not shipped, not part of tether: scripts/bench builds it with the system `cc -O2`.
 * It does what tether's control port does for the benchmark's traffic and no more:
 * one single-threaded poll(2) loop, non-blocking sockets, a fixed table of 16 clients,
 * per-client input and output buffers; each complete line "PING" (or "ping", any case,
 * optional '\r') is answered "PONG\n", anything else "ERR bad-command\n". A full table
 * answers "ERR busy\n" and closes. Reads until EAGAIN (at most 16 per turn), accepts until
 * EAGAIN, answers every complete line, writes the replies with one send per turn.
 *
 *   pingserver PORT [BACKLOG]      listens on 127.0.0.1:PORT, prints "ready" when up
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_CLIENTS 16
#define IN_BUF 257
#define OUT_BUF 16384

struct client {
    int fd;
    size_t in_len, out_len;
    char in[IN_BUF];
    char out[OUT_BUF];
};

static struct client cl[MAX_CLIENTS];

static void drop(struct client *c) {
    close(c->fd);
    c->fd = -1;
    c->in_len = c->out_len = 0;
}

static int flush_out(struct client *c) {
    size_t off = 0;
    while (off < c->out_len) {
        ssize_t n = send(c->fd, c->out + off, c->out_len - off, MSG_NOSIGNAL);
        if (n > 0) { off += (size_t)n; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) break;
        return -1;
    }
    memmove(c->out, c->out + off, c->out_len - off);
    c->out_len -= off;
    return 0;
}

static void answer(struct client *c) {
    size_t start = 0;
    for (;;) {
        char *nl = memchr(c->in + start, '\n', c->in_len - start);
        if (!nl) break;
        size_t len = (size_t)(nl - (c->in + start));
        const char *line = c->in + start;
        if (len && line[len - 1] == '\r') len--;
        const char *r = (len == 4 && strncasecmp(line, "PING", 4) == 0) ? "PONG\n" : "ERR bad-command\n";
        size_t rl = strlen(r);
        if (c->out_len + rl <= OUT_BUF) {
            memcpy(c->out + c->out_len, r, rl);
            c->out_len += rl;
        }
        start = (size_t)(nl - c->in) + 1;
    }
    memmove(c->in, c->in + start, c->in_len - start);
    c->in_len -= start;
    if (c->in_len == IN_BUF) c->in_len = 0; /* too long: drop it */
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: pingserver PORT [BACKLOG]\n"); return 64; }
    int backlog = argc > 2 ? atoi(argv[2]) : 8;
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[1])),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, backlog)) { perror("listen"); return 71; }
    for (int i = 0; i < MAX_CLIENTS; i++) cl[i].fd = -1;
    printf("ready port=%s\n", argv[1]);
    fflush(stdout);
    struct pollfd pfd[1 + MAX_CLIENTS];
    int who[1 + MAX_CLIENTS];
    for (;;) {
        int n = 0;
        pfd[n].fd = ls; pfd[n].events = POLLIN; who[n++] = -1;
        for (int i = 0; i < MAX_CLIENTS; i++) {
            if (cl[i].fd < 0) continue;
            pfd[n].fd = cl[i].fd;
            pfd[n].events = (short)(POLLIN | (cl[i].out_len ? POLLOUT : 0));
            who[n++] = i;
        }
        if (poll(pfd, (nfds_t)n, -1) < 0) {
            if (errno == EINTR) continue;
            perror("poll");
            return 71;
        }
        for (int k = 0; k < n; k++) {
            short ev = pfd[k].revents;
            if (!ev) continue;
            if (who[k] < 0) {
                for (;;) {
                    int fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) break;
                    int i = 0;
                    while (i < MAX_CLIENTS && cl[i].fd >= 0) i++;
                    if (i == MAX_CLIENTS) {
                        (void)send(fd, "ERR busy\n", 9, MSG_NOSIGNAL);
                        close(fd);
                        continue;
                    }
                    cl[i].fd = fd;
                    cl[i].in_len = cl[i].out_len = 0;
                }
                continue;
            }
            struct client *c = &cl[who[k]];
            if (c->fd < 0) continue;
            int dead = 0;
            if (ev & POLLOUT && flush_out(c)) dead = 1;
            if (!dead && ev & (POLLIN | POLLHUP | POLLERR)) {
                for (int r = 0; r < 16; r++) {
                    size_t room = IN_BUF - c->in_len;
                    ssize_t got = recv(c->fd, c->in + c->in_len, room, 0);
                    if (got > 0) {
                        c->in_len += (size_t)got;
                        answer(c);
                        if ((size_t)got < room) break; /* drained: no second recv for EAGAIN */
                        continue;
                    }
                    if (got < 0 && errno == EINTR) continue;
                    if (got < 0 && errno == EAGAIN) break;
                    dead = 1;
                    break;
                }
                if (c->out_len && flush_out(c)) dead = 1;
            }
            if (dead) drop(c);
        }
    }
}
