/*
 * rawudp.c - the raw UDP baseline of `crust bench` and benchmarks/: what
 * the kernel alone moves over loopback, with the same batching crust uses
 * (sendmmsg/recvmmsg, optionally GSO and GRO). Compiled on the fly by the
 * benchmark with `cc -O2` (crust.bench.baselines).
 *
 *   rawudp recv <payload> <batch> <gro 0|1>
 *       binds 127.0.0.1:0, prints "port N", counts datagrams until 300 ms
 *       of silence after the first, prints
 *       "datagrams D bytes B ns T" (T: first to last datagram)
 *   rawudp send <port> <payload> <batch> <gso 0|1> <seconds>
 *       sends payload-byte datagrams as fast as sendmmsg takes them
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int do_recv(int payload, int batch, int gro)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    int big = 4 << 20, one = 1;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    if (gro)
        setsockopt(fd, SOL_UDP, UDP_GRO, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0)
        return 1;
    socklen_t al = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &al);
    printf("port %d\n", ntohs(a.sin_port));
    fflush(stdout);

    size_t slot = gro ? 65536 : (size_t)payload + 64;
    uint8_t *buf = malloc(slot * (size_t)batch);
    struct mmsghdr *m = calloc((size_t)batch, sizeof *m);
    struct iovec *iov = calloc((size_t)batch, sizeof *iov);
    char (*ctrl)[64] = calloc((size_t)batch, 64);
    uint64_t dgrams = 0, bytes = 0, first = 0, last = 0;
    /* The silence that ends the run: 300 ms once data flowed, 10 s before. */
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    for (;;) {
        for (int i = 0; i < batch; i++) {
            iov[i].iov_base = buf + slot * (size_t)i;
            iov[i].iov_len = slot;
            m[i].msg_hdr.msg_iov = &iov[i];
            m[i].msg_hdr.msg_iovlen = 1;
            m[i].msg_hdr.msg_control = ctrl[i];
            m[i].msg_hdr.msg_controllen = 64;
        }
        int n = recvmmsg(fd, m, (unsigned)batch, 0, NULL);
        if (n <= 0)
            break;
        if (!first) {
            first = now_ns();
            tv.tv_sec = 0;
            tv.tv_usec = 300000;
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        }
        last = now_ns();
        for (int i = 0; i < n; i++) {
            size_t len = m[i].msg_len, seg = len;
            for (struct cmsghdr *c = CMSG_FIRSTHDR(&m[i].msg_hdr); c;
                 c = CMSG_NXTHDR(&m[i].msg_hdr, c))
                if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO)
                    seg = (size_t)*(int *)CMSG_DATA(c);
            dgrams += seg ? (len + seg - 1) / seg : 1;
            bytes += len;
        }
    }
    printf("datagrams %llu bytes %llu ns %llu\n", (unsigned long long)dgrams,
           (unsigned long long)bytes, (unsigned long long)(last - first));
    return 0;
}

static int do_send(int port, int payload, int batch, int gso, double seconds)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    int big = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    struct sockaddr_in to = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    /* With GSO each entry is a super-datagram of `segs` payloads. */
    int segs = gso ? 65000 / payload : 1;
    if (segs > 64)
        segs = 64;
    size_t len = (size_t)payload * (size_t)segs;
    uint8_t *buf = calloc(1, len);
    struct mmsghdr *m = calloc((size_t)batch, sizeof *m);
    struct iovec iov = {buf, len};
    char ctrl[CMSG_SPACE(sizeof(uint16_t))];
    memset(ctrl, 0, sizeof ctrl);
    struct msghdr h = {.msg_name = &to, .msg_namelen = sizeof to, .msg_iov = &iov,
                       .msg_iovlen = 1};
    if (gso) {
        h.msg_control = ctrl;
        h.msg_controllen = sizeof ctrl;
        struct cmsghdr *c = CMSG_FIRSTHDR(&h);
        c->cmsg_level = SOL_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        uint16_t s = (uint16_t)payload;
        memcpy(CMSG_DATA(c), &s, sizeof s);
    }
    for (int i = 0; i < batch; i++)
        m[i].msg_hdr = h;
    uint64_t end = now_ns() + (uint64_t)(seconds * 1e9), sent = 0;
    while (now_ns() < end) {
        int n = sendmmsg(fd, m, (unsigned)batch, 0);
        if (n > 0)
            sent += (uint64_t)n * (uint64_t)segs;
    }
    printf("sent %llu\n", (unsigned long long)sent);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "recv") == 0)
        return do_recv(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
    if (argc == 7 && strcmp(argv[1], "send") == 0)
        return do_send(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]), atoi(argv[5]),
                       atof(argv[6]));
    fprintf(stderr, "usage: see the comment at the top of rawudp.c\n");
    return 2;
}
