/* ledger_events.c -- the table of ledger actions and message states that ledger_events.h lists, and the
 * lookups of a leaf's action and of a transition in it. */
#include "ledger_events.h"

#include <string.h>

#define LEDGER_ACTION_ROW(id, name, by, signature, from, to, rules) {name, by, signature, from, to, rules},
const ledger_action_row_t ledger_actions[ACTION_COUNT] = {LEDGER_ACTIONS(LEDGER_ACTION_ROW)};

#define LEDGER_STATE_NAME(id, name) name,
const char *const message_states[STATE_COUNT] = {MESSAGE_STATES(LEDGER_STATE_NAME)};

ledger_action_t ledger_action_of(const char *name)
{
    ledger_action_t a = 0;
    while (a < ACTION_COUNT && strcmp(ledger_actions[a].name, name) != 0)
        a++;
    return a;
}

msg_state_t message_state_of(const char *name)
{
    msg_state_t s = 0;
    while (s < STATE_COUNT && strcmp(message_states[s], name) != 0)
        s++;
    return s;
}

bool ledger_moves(ledger_action_t a, msg_state_t from)
{
    return from < STATE_COUNT && (ledger_actions[a].from & (1u << from)) != 0;
}

msg_state_t ledger_from(ledger_action_t a)
{
    msg_state_t s = 0;
    while (s < STATE_COUNT && !ledger_moves(a, s))
        s++;
    return s;
}

ledger_action_t ledger_transition(msg_state_t from, msg_state_t to)
{
    ledger_action_t a = 0;
    while (a < ACTION_COUNT && !(ledger_moves(a, from) && ledger_actions[a].to == to))
        a++;
    return a;
}
