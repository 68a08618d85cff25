import { z } from "zod";

/**
 * How a tenant's ACD looks from asd-bridge, kept in the acd-status KV bucket under
 * `names.acdStatusKey(tenant)`, one entry per tenant. asd-bridge is the only writer (its
 * `acd-status.ts` module); `postroom status` and dashboards read it. Like the mailbox status it
 * carries no secret and no customer address: only what an operator needs to act.
 */
export const AcdProblem = z.object({
  /** A short, stable code: `unknown-agent`, `unacknowledged-frame`, `offer-refused`, ... */
  kind: z.string(),
  /** What it is about: an agent id, a session id, a frame code; never an e-mail address. */
  subject: z.string(),
  /** What happened, in words. */
  detail: z.string(),
  /** What to do about it. */
  fix: z.string(),
  /** How often it happened since asd-bridge started (or since the problem was last cleared). */
  count: z.number().int().nonnegative(),
  /** When it last happened. */
  lastAt: z.string(),
});
export type AcdProblem = z.infer<typeof AcdProblem>;

export const AcdState = z.enum(["connecting", "connected", "unreachable", "stopped"]);
export type AcdState = z.infer<typeof AcdState>;

export const AcdStatus = z.object({
  version: z.literal("v1"),
  tenant: z.string(),
  /** Which ACD the tenant uses. */
  acd: z.enum(["builtin", "softdial", "webhook"]),
  /**
   * connecting: not yet connected (or reconnecting); connected: the ACD takes offers (the built-in
   * distributor always is); unreachable: offers fail and are held back until it answers again;
   * stopped: asd-bridge stopped.
   */
  state: AcdState,
  /** Since when the ACD has been in this state. */
  since: z.string(),
  /** The last failure talking to the ACD, null when none since it was last connected. */
  lastError: z
    .object({
      message: z.string(),
      fix: z.string().nullable(),
      at: z.string(),
    })
    .nullable(),
  /** Sessions the ACD has not taken yet because it is unreachable (webhook: offers held back). */
  heldBack: z.number().int().nonnegative(),
  /**
   * Emails that ended at the ACD without an agent (queue timeout without overflow, abandon,
   * refusal) and are not answered yet: how many, and since when the oldest has been waiting.
   */
  unanswered: z.object({
    count: z.number().int().nonnegative(),
    /** When the oldest of them was first recorded unanswered; null when there are none. */
    oldestAt: z.string().nullable(),
    /** The tenant's configured age after which unanswered emails raise an alert. */
    alertAfterSeconds: z.number().nonnegative(),
  }),
  /** Configuration and protocol problems seen with this ACD (unknown agents, unacknowledged frames, ...). */
  problems: z.array(AcdProblem),
  updatedAt: z.string(),
});
export type AcdStatus = z.infer<typeof AcdStatus>;

/** Seconds the oldest unanswered email has waited at `now` (0 when there is none). */
export function oldestUnansweredSeconds(status: Pick<AcdStatus, "unanswered">, now: Date): number {
  const at = status.unanswered.oldestAt ? Date.parse(status.unanswered.oldestAt) : NaN;
  return Number.isNaN(at) ? 0 : Math.max(0, Math.round((now.getTime() - at) / 1000));
}
