/*
 * bench.c - in-process benchmark drivers. These are the only functions in
 * csrc/ that read a clock: they measure the engine, they are not part of it,
 * so they live outside the library (crust_bench.h, CMakeLists.txt).
 */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aead.h"
#include "crust_bench.h"
#include "header_mask.h"

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int64_t crust_bench_pair(crust_conn *a, crust_conn *b, uint64_t bytes, size_t msg_len,
                         uint64_t *elapsed_ns)
{
    if (!a || !b || msg_len == 0 || !elapsed_ns)
        return CRUST_EINVAL;
    uint8_t *msg = calloc(1, msg_len);
    uint8_t *rbuf = malloc(msg_len);
    if (!msg || !rbuf) {
        free(msg);
        free(rbuf);
        return CRUST_ENOMEM;
    }
    uint8_t pkt[CRUST_MAX_PACKET];
    uint64_t queued = 0, received = 0;
    int64_t packets = 0;
    uint64_t t0 = mono_ns(), last_progress = t0;
    int64_t rc = 0;
    while (received < bytes) {
        uint64_t tnow = mono_ns();
        uint64_t now = tnow / 1000;
        while (queued < bytes) {
            int r = crust_conn_send(a, now, msg, msg_len, 0, NULL);
            if (r == CRUST_EWOULDBLOCK)
                break;
            if (r != CRUST_OK) {
                rc = r;
                goto out;
            }
            queued += msg_len;
        }
        size_t n;
        while ((n = crust_conn_poll_transmit(a, now, pkt, sizeof pkt)) > 0) {
            crust_conn_recv(b, now, pkt, n);
            packets++;
        }
        crust_event ev;
        uint64_t before = received;
        while (crust_conn_poll_event(b, &ev)) {
            if (ev.type == CRUST_EV_MESSAGE) {
                int64_t m = crust_conn_read_message(b, ev.prio, rbuf, msg_len);
                if (m > 0)
                    received += (uint64_t)m;
            } else if (ev.type == CRUST_EV_CLOSED) {
                rc = CRUST_ECLOSED;
                goto out;
            }
        }
        while ((n = crust_conn_poll_transmit(b, now, pkt, sizeof pkt)) > 0)
            crust_conn_recv(a, now, pkt, n);
        while (crust_conn_poll_event(a, &ev)) {
        }
        if (crust_conn_next_timeout(a) <= now)
            crust_conn_handle_timeout(a, now);
        if (crust_conn_next_timeout(b) <= now)
            crust_conn_handle_timeout(b, now);
        if (received > before)
            last_progress = tnow;
        else if (tnow - last_progress > 5000000000ull) {
            rc = CRUST_EINVAL; /* stalled for 5 s: report rather than hang */
            goto out;
        }
    }
    rc = packets;
out:
    *elapsed_ns = mono_ns() - t0;
    free(msg);
    free(rbuf);
    return rc;
}

int64_t crust_bench_aead(crust_aead_id aead, size_t pkt_len, uint64_t count, uint64_t *elapsed_ns)
{
    if (!crust_aead_available(aead) || pkt_len < crust_aead_tag_len(aead) + 16 ||
        pkt_len > CRUST_MAX_PACKET || !elapsed_ns)
        return CRUST_EINVAL;
    crust_keys k;
    memset(&k, 0x5a, sizeof k);
    k.aead = (uint8_t)aead;
    k.valid = 1;
    uint8_t plain[CRUST_MAX_PACKET], wire[CRUST_MAX_PACKET], back[CRUST_MAX_PACKET];
    memset(plain, 0xa5, sizeof plain);
    size_t hdr = 12, mlen = pkt_len - hdr - crust_aead_tag_len(aead);
    memset(wire, 0x40, hdr);
    uint64_t t0 = mono_ns();
    for (uint64_t i = 0; i < count; i++) {
        crust_aead_seal(&k, i, wire + hdr, plain, mlen, wire, hdr);
        if (crust_aead_open(&k, i, back, wire + hdr, mlen + crust_aead_tag_len(aead), wire, hdr) != 0)
            return CRUST_EDECRYPT;
    }
    *elapsed_ns = mono_ns() - t0;
    return (int64_t)count;
}

int64_t crust_bench_header_mask(size_t pkt_len, uint64_t count, uint64_t *elapsed_ns)
{
    if (pkt_len < CRUST_HM_MIN_PACKET || pkt_len > CRUST_MAX_PACKET || !elapsed_ns)
        return CRUST_EINVAL;
    uint8_t key[CRUST_HM_KEY_LEN], pkt[CRUST_MAX_PACKET], cid[CRUST_CID_LEN];
    memset(key, 0x5a, sizeof key);
    memset(pkt, 0xa5, sizeof pkt);
    pkt[0] = 0x41; /* a 2-byte packet number, as crust sends */
    uint64_t t0 = mono_ns();
    for (uint64_t i = 0; i < count; i++) {
        memcpy(pkt + CRUST_HM_SAMPLE_OFFSET, &i, sizeof i); /* a new sample, as a new packet */
        crust_header_mask(key, pkt, pkt_len);
        if (crust_header_unmask(key, pkt, pkt_len, cid) != 2)
            return CRUST_EMALFORMED;
    }
    *elapsed_ns = mono_ns() - t0;
    return (int64_t)count;
}
