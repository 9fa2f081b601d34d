/**
 * The longest delay Node timers accept: 2^31−1 ms (about 24.8 days). A longer `setTimeout` fires after 1 ms
 * instead, so every duration option of every supermachine package is capped to this.
 */
export const MAX_TIMER_MS = 2_147_483_647;
