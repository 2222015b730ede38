/* verifier.c -- the verifier thread: a turn's SUBMIT envelopes are verified on both cores before the
 * loop handles the turn's frames in order.
 *
 * The signature check and the hashes are most of a submission's cost and need nothing but the trust store,
 * which does not change until the frames are handled. The loop waits for the turn's verifications inside
 * the turn (verify_ahead), so the thread never needs to wake the loop's poll. */
#include "broker_loop.h"

#include <unistd.h>

#include "rbcrypto.h"

void verify_envelope(const broker_t *b, const uint8_t *env, size_t len, verified_t *out)
{
    out->done = true;
    out->header = NULL;
    out->rc = envelope_verify_header(b->trust, env, len, &out->header, &out->sender);
    if (out->rc == RB_OK)
        rbcrypto_sha256(env, len, out->sha256);
}

/* A message taken this turn: when it is a SUBMIT of this protocol version, its envelope verified. */
static void verify_taken(broker_t *b, taken_t *t)
{
    t->pre.done = false;
    size_t len = zmq_msg_size(&t->body);
    if (!t->two || !t->one_part || (int64_t)len > b->cfg->max_message_bytes)
        return;
    Rb__Frame *f = rb__frame__unpack(NULL, len, zmq_msg_data(&t->body));
    if (f != NULL && f->body_case == RB__FRAME__BODY_SUBMIT && version_known(f))
        verify_envelope(b, f->submit->envelope.data, f->submit->envelope.len, &t->pre);
    if (f != NULL)
        rb__frame__free_unpacked(f, NULL);
}

/* Takes messages to verify until none is left; the one that finishes the last wakes the loop. */
static void verify_some(broker_t *b)
{
    uint64_t v = atomic_load(&b->claim);
    for (;;) {
        size_t count = (size_t)(v >> 20 & 0xfffff), i = (size_t)(v & 0xfffff);
        if (i >= count)
            return;
        if (!atomic_compare_exchange_weak(&b->claim, &v, v + 1))
            continue; /* v is reloaded */
        verify_taken(b, &b->taken[i]);
        if (atomic_fetch_add(&b->done, 1) + 1 == count) {
            pthread_mutex_lock(&b->lock);
            pthread_cond_signal(&b->finished);
            pthread_mutex_unlock(&b->lock);
        }
        v = atomic_load(&b->claim);
    }
}

static void *verifier_main(void *arg)
{
    broker_t *b = arg;
    uint64_t seen = 0;
    pthread_mutex_lock(&b->lock);
    for (;;) {
        while (!b->verifier_stop && b->round == seen)
            pthread_cond_wait(&b->wake, &b->lock);
        if (b->verifier_stop)
            break;
        seen = b->round;
        pthread_mutex_unlock(&b->lock);
        verify_some(b);
        pthread_mutex_lock(&b->lock);
    }
    pthread_mutex_unlock(&b->lock);
    return NULL;
}

void verify_ahead(broker_t *b)
{
    /* Every message of the last turn is done (below), so no take of it can succeed any more. */
    atomic_store(&b->done, 0);
    pthread_mutex_lock(&b->lock);
    b->round++;
    atomic_store(&b->claim, (b->round & 0xffffff) << 40 | (uint64_t)b->n_taken << 20);
    if (b->verifier_started && b->n_taken >= 2)
        pthread_cond_signal(&b->wake);
    pthread_mutex_unlock(&b->lock);
    verify_some(b);
    pthread_mutex_lock(&b->lock);
    while (atomic_load(&b->done) < b->n_taken)
        pthread_cond_wait(&b->finished, &b->lock);
    pthread_mutex_unlock(&b->lock);
}

void verifier_start(broker_t *b)
{
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->wake, NULL);
    pthread_cond_init(&b->finished, NULL);
    /* One core verifies while the other handles frames; on one core there is nothing to share. */
    b->verifier_started =
        sysconf(_SC_NPROCESSORS_ONLN) > 1 && pthread_create(&b->verifier, NULL, verifier_main, b) == 0;
}

void verifier_stop(broker_t *b)
{
    if (b->verifier_started) {
        pthread_mutex_lock(&b->lock);
        b->verifier_stop = true;
        pthread_cond_signal(&b->wake);
        pthread_mutex_unlock(&b->lock);
        pthread_join(b->verifier, NULL);
    }
    pthread_mutex_destroy(&b->lock);
    pthread_cond_destroy(&b->wake);
    pthread_cond_destroy(&b->finished);
}
