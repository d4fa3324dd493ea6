// Build from the repository root (the engine is plain C11 + Linux):
//   cc -std=gnu11 -O2 -Icsrc examples/c/engine_pair.c csrc/*.c -lm -o engine_pair
//   ./engine_pair

/*
 * Embedding crust's engine from C: two connection ends in one program pass
 * a message through an in-memory "network" and back, with no sockets and no
 * clock of their own (the engine is sans-IO: every call takes `now`).
 *
 * It uses the built-in null AEAD so it needs no crypto library; a real
 * embedder registers libsodium's AEADs with crust_aead_register() and
 * installs the keys its handshake derived (see docs: C API).
 */
#include <stdio.h>
#include <string.h>

#include "crust.h"

/* Move every datagram `from` wants to send into `to`. Returns the count. */
static int pump(crust_conn *from, crust_conn *to, uint64_t now) {
    uint8_t pkt[CRUST_MAX_PACKET];
    size_t len;
    int n = 0;
    while ((len = crust_conn_poll_transmit(from, now, pkt, sizeof pkt)) > 0) {
        crust_conn_recv(to, now, pkt, len); /* drops are counted, not fatal */
        n++;
    }
    return n;
}

/* Wait (in virtual time) until `c` announces a message; copy it into buf. */
static int64_t receive(crust_conn *a, crust_conn *b, crust_conn *c, uint64_t *now,
                       uint8_t *buf, size_t cap) {
    for (int round = 0; round < 1000; round++) {
        crust_event ev;
        while (crust_conn_poll_event(c, &ev)) {
            if (ev.type == CRUST_EV_MESSAGE)
                return crust_conn_read_message(c, ev.prio, buf, cap);
        }
        if (pump(a, b, *now) + pump(b, a, *now) == 0) {
            /* Nothing to send: jump to the earliest timer (delayed ACK...). */
            uint64_t ta = crust_conn_next_timeout(a), tb = crust_conn_next_timeout(b);
            uint64_t t = ta < tb ? ta : tb;
            if (t == UINT64_MAX)
                return CRUST_EINVAL;
            *now = t > *now ? t : *now;
            crust_conn_handle_timeout(a, *now);
            crust_conn_handle_timeout(b, *now);
        }
    }
    return CRUST_EINVAL;
}

int main(void) {
    const uint8_t cid_a[CRUST_CID_LEN] = {1, 2, 3, 4, 5, 6, 7, 8};
    const uint8_t cid_b[CRUST_CID_LEN] = {8, 7, 6, 5, 4, 3, 2, 1};
    uint8_t key_ab[CRUST_KEY_LEN] = {0}, key_ba[CRUST_KEY_LEN] = {1};
    uint8_t iv_ab[CRUST_IV_LEN] = {0}, iv_ba[CRUST_IV_LEN] = {1};
    uint64_t now = 1000000; /* any monotonic microseconds */

    crust_config cfg;
    crust_config_default(&cfg);
    crust_conn *a = crust_conn_new(&cfg, cid_a, cid_b, now);
    crust_conn *b = crust_conn_new(&cfg, cid_b, cid_a, now);
    if (!a || !b)
        return 1;
    /* What a handshake would produce: one key and IV per direction. */
    crust_conn_set_keys(a, 0, CRUST_AEAD_NULL, key_ab, iv_ab, key_ba, iv_ba);
    crust_conn_set_keys(b, 0, CRUST_AEAD_NULL, key_ba, iv_ba, key_ab, iv_ab);

    const char *hello = "hello from C";
    uint8_t buf[256];
    int rc = crust_conn_send(a, now, (const uint8_t *)hello, strlen(hello), 0, NULL);
    if (rc != CRUST_OK) {
        fprintf(stderr, "send: %s\n", crust_strerror(rc));
        return 1;
    }
    int64_t n = receive(a, b, b, &now, buf, sizeof buf);
    if (n < 0) {
        fprintf(stderr, "receive: %s\n", crust_strerror((int)n));
        return 1;
    }
    printf("b got: %.*s\n", (int)n, (const char *)buf);

    const char *reply = "hello from b";
    crust_conn_send(b, now, (const uint8_t *)reply, strlen(reply), 1, NULL);
    n = receive(a, b, a, &now, buf, sizeof buf);
    if (n < 0)
        return 1;
    printf("a got: %.*s\n", (int)n, (const char *)buf);

    crust_stats st;
    crust_conn_get_stats(a, &st);
    printf("a sent %llu packets, %llu bytes\n", (unsigned long long)st.tx_packets,
           (unsigned long long)st.tx_bytes);
    crust_conn_free(a);
    crust_conn_free(b);
    return 0;
}
