/*
 * fuzz_packet.c - libFuzzer target: arbitrary datagrams into crust_conn_recv
 * of a connection that has keys (generations 0 and 1, null AEAD).
 *
 * Input: a sequence of records, each
 *   ctl (1 byte) | len (1 byte) | len bytes of datagram
 * ctl bit 0: put our connection id into bytes 1..8, so the datagram gets
 *            past the demultiplexer and into packet-number decoding, the
 *            replay window and decryption;
 * ctl bit 1: seal bytes 9.. as the payload of a VALID packet with the
 *            header's flags and packet number as given (any key phase and
 *            number length), reaching the frame parser with garbage;
 * ctl bit 2: advance the clock by ctl * 997 us and run the timers;
 * ctl bit 3: send what the engine wants to send (and check it).
 * Whatever the bytes, recv must return OK or a CRUST_E* code, count every
 * drop, and keep the engine's invariants.
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    crust_config cfg;
    crust_config_default(&cfg);
    cfg.rekey_packets = 16;
    uint64_t now = 1000;
    crust_conn *c = fuzz_new_conn(&cfg, now);
    static uint8_t pkt[CRUST_MAX_PACKET + 64], out[CRUST_MAX_PACKET];
    size_t off = 0;
    while (off + 2 <= size) {
        uint8_t ctl = data[off];
        size_t len = data[off + 1];
        off += 2;
        if (len > size - off)
            len = size - off;
        /* Exact-size heap copy: ASan catches any read beyond the datagram. */
        uint8_t *d = malloc(len ? len : 1);
        FUZZ_ASSERT(d != NULL);
        memcpy(d, data + off, len);
        off += len;
        if ((ctl & 1) && len >= 1 + CRUST_CID_LEN)
            memcpy(d + 1, FUZZ_CID_US, CRUST_CID_LEN);
        size_t dlen = len;
        if ((ctl & 2) && len >= 1 + CRUST_CID_LEN + 4) {
            /* Keep the fuzzer's header, seal its payload under the keys
             * of the generation the phase bit names. */
            unsigned pnlen = (d[0] & 3u) + 1;
            size_t hdr = 1 + CRUST_CID_LEN + pnlen;
            uint64_t trunc = 0;
            for (unsigned i = 0; i < pnlen; i++)
                trunc = (trunc << 8) | d[1 + CRUST_CID_LEN + i];
            uint64_t pn = crust_pn_decode(c->rx_largest_plus1, trunc, pnlen * 8);
            uint64_t gen = c->key_gen;
            if (((d[0] & 0x04) != 0) != (c->tx_phase == 1))
                gen = c->old_keys ? gen - 1 : gen + 1;
            crust_keys k;
            fuzz_keys(0, gen, &k);
            memcpy(pkt, d, hdr);
            FUZZ_ASSERT(crust_aead_seal(&k, pn, pkt + hdr, d + hdr, len - hdr, pkt, hdr) ==
                        CRUST_OK);
            free(d);
            dlen = len + CRUST_TAG_LEN;
            d = malloc(dlen);
            FUZZ_ASSERT(d != NULL);
            memcpy(d, pkt, dlen);
        }
        crust_stats before, after;
        crust_conn_get_stats(c, &before);
        int rc = crust_conn_recv(c, now, d, dlen);
        crust_conn_get_stats(c, &after);
        free(d);
        FUZZ_ASSERT(rc == CRUST_OK || rc == CRUST_EDECRYPT || rc == CRUST_EMALFORMED ||
                    rc == CRUST_EDUPLICATE || rc == CRUST_ETOOOLD || rc == CRUST_ENOTOURS ||
                    rc == CRUST_EPROTO || rc == CRUST_ECLOSED || rc == CRUST_ENOMEM);
        if (rc == CRUST_EDECRYPT || rc == CRUST_EMALFORMED || rc == CRUST_EDUPLICATE ||
            rc == CRUST_ETOOOLD || rc == CRUST_ENOTOURS) {
            uint64_t drops_before = before.rx_dropped_decrypt + before.rx_dropped_malformed +
                                    before.rx_dropped_duplicate + before.rx_dropped_old +
                                    before.rx_dropped_notours;
            uint64_t drops_after = after.rx_dropped_decrypt + after.rx_dropped_malformed +
                                   after.rx_dropped_duplicate + after.rx_dropped_old +
                                   after.rx_dropped_notours;
            FUZZ_ASSERT(drops_after == drops_before + 1);
        }
        if (ctl & 4) {
            now += (uint64_t)ctl * 997;
            crust_conn_handle_timeout(c, now);
        }
        if (ctl & 8) {
            size_t n;
            for (int i = 0; i < 64 && (n = crust_conn_poll_transmit(c, now, out, sizeof out)); i++)
                fuzz_check_output(c, out, n, c->rx_largest_plus1, NULL, NULL);
        }
        crust_event ev;
        while (crust_conn_poll_event(c, &ev)) {
            if (ev.type == CRUST_EV_MESSAGE || ev.type == CRUST_EV_CONTROL) {
                static uint8_t msg[1 << 16];
                if (ev.len <= sizeof msg)
                    FUZZ_ASSERT(crust_conn_read_message(c, ev.prio, msg, sizeof msg) ==
                                (int64_t)ev.len);
                else
                    break; /* left unread: the same event would come back */
            } else if (ev.type == CRUST_EV_KEYS_NEEDED) {
                FUZZ_ASSERT(ev.prio == (ev.code & 1));
                fuzz_install(c, ev.code);
            }
        }
        fuzz_check_invariants(c);
    }
    crust_conn_free(c);
    return 0;
}
