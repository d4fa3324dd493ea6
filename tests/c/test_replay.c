/*
 * test_replay.c - the receiver's replay window: duplicates and packets
 * too far behind the largest received are dropped before any crypto work.
 */
#include <string.h>

#include "check.h"
#include "conn.h"

static crust_conn *new_conn(void)
{
    crust_config cfg;
    crust_config_default(&cfg);
    cfg.pacing = 0;
    cfg.idle_timeout_us = 0;
    cfg.lost_timeout_us = 0;
    cfg.keepalive_us = 0;
    uint8_t a[8] = {1, 1, 1, 1, 1, 1, 1, 1}, b[8] = {2, 2, 2, 2, 2, 2, 2, 2}, k[32] = {0},
            iv[12] = {0};
    crust_conn *c = crust_conn_new(&cfg, a, b, 0);
    crust_conn_set_keys(c, 0, CRUST_AEAD_NULL, k, iv, k, iv);
    return c;
}

static void test_replay_window(void)
{
    crust_conn *a = new_conn();
    uint8_t ca[8] = {2, 2, 2, 2, 2, 2, 2, 2}, cb[8] = {1, 1, 1, 1, 1, 1, 1, 1}, k[32] = {0},
            iv[12] = {0};
    crust_config cfg;
    crust_config_default(&cfg);
    crust_conn *b = crust_conn_new(&cfg, ca, cb, 0);
    crust_conn_set_keys(b, 0, CRUST_AEAD_NULL, k, iv, k, iv);
    static uint8_t pkts[9000][64];
    static size_t lens[9000];
    for (int i = 0; i < 9000; i++) {
        a->ping_pending = 1;
        a->probes_pending = 1; /* bypass the window: this is a replay test */
        lens[i] = crust_conn_poll_transmit(a, 0, pkts[i], 64);
        CHECK(lens[i] > 0);
    }
    /* (Packet numbers go out in at least 2 bytes, which decode correctly
     * this far behind the largest.) */
    CHECK(crust_conn_recv(b, 1, pkts[8999], lens[8999]) == CRUST_OK);
    CHECK(crust_conn_recv(b, 1, pkts[1000], lens[1000]) == CRUST_OK); /* in window */
    CHECK(crust_conn_recv(b, 1, pkts[1000], lens[1000]) == CRUST_EDUPLICATE);
    CHECK(crust_conn_recv(b, 1, pkts[500], lens[500]) == CRUST_ETOOOLD); /* 8499 behind */
    CHECK(crust_conn_recv(b, 1, pkts[8999], lens[8999]) == CRUST_EDUPLICATE);
    CHECK(b->st.rx_dropped_duplicate == 2 && b->st.rx_dropped_old == 1);
    crust_conn_free(a);
    crust_conn_free(b);
}

int main(void)
{
    test_replay_window();
    return check_summary();
}
