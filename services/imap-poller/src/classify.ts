import { CredentialUnavailableError } from "@postroom/nats-kit";

/**
 * Decides what a failed connection or command means for the mailbox. Pure, so it is tested on
 * the real texts servers send.
 */
export type FailureKind = "auth" | "throttled" | "transient";

export interface Failure {
  kind: FailureKind;
  /** The server's own words, for the mailbox status. */
  text: string;
  /** For throttling: the server's suggested wait. */
  retryAfterMs?: number;
}

export function classifyImapError(error: unknown): Failure {
  const e = error as { authenticationFailed?: boolean; responseText?: string; serverResponseCode?: string; message?: string; code?: string; retryAfterMs?: number };
  const text = e?.responseText ?? e?.message ?? String(error);
  // Microsoft Graph's 429/503 with Retry-After (graph-client's GraphError).
  if (typeof e?.retryAfterMs === "number") return { kind: "throttled", text, retryAfterMs: e.retryAfterMs };
  // Exchange Online: "Request is throttled. Suggested Backoff Time: 12345 milliseconds"
  const throttle = /Suggested Backoff Time:\s*(\d+)/i.exec(text);
  if (throttle) return { kind: "throttled", text, retryAfterMs: Number(throttle[1]) };
  if (e?.authenticationFailed || e?.serverResponseCode === "AUTHENTICATIONFAILED" || /AUTHENTICATE failed|authentication failed|invalid credentials|LOGIN failed/i.test(text)) {
    return { kind: "auth", text };
  }
  return { kind: "transient", text };
}

/** What a mailbox worker does after a failed connection or check. */
export type FailureAction =
  /** Log in again at once with a fresh credential (the server refused the last one). */
  | { action: "refresh-credential"; text: string }
  /** Report needs-admin and retry only slowly; `rejectedOnce` is what the next attempt starts with. */
  | { action: "needs-admin"; message: string; code: string | null; fix: string | null; rejectedOnce: boolean }
  /** Back off (capped exponential, or the server's own suggestion) and try again. */
  | { action: "back-off"; text: string; code: string; retryAfterMs?: number };

/**
 * The one decision both the IMAP and the POP3 worker make after a failure: a refused login gets
 * one immediate retry with a fresh credential, then only the slow needs-admin retry (each with a
 * fresh credential again, so a fixed password or a re-granted app is picked up without a restart);
 * token-service saying an administrator is needed goes straight there; anything else backs off.
 */
export function decideFailure(error: unknown, state: { rejectedOnce: boolean; needsAdminNow: boolean }): FailureAction {
  // token-service itself says an administrator must act (bad secret, AADSTS catalogue, …).
  if (error instanceof CredentialUnavailableError && error.kind !== "transient" && error.kind !== "no-answer") {
    return { action: "needs-admin", message: error.message, code: error.code, fix: error.fix, rejectedOnce: false };
  }
  // A refusal no retry cures (Graph's ErrorAccessDenied, a mailbox Graph does not know).
  const admin = error as { adminFix?: string; code?: string; message?: string };
  if (typeof admin?.adminFix === "string") {
    return { action: "needs-admin", message: admin.message ?? String(error), code: admin.code ?? null, fix: admin.adminFix, rejectedOnce: state.rejectedOnce };
  }
  const failure = classifyImapError(error);
  if (failure.kind === "auth") {
    if (!state.rejectedOnce && !state.needsAdminNow) return { action: "refresh-credential", text: failure.text };
    return {
      action: "needs-admin",
      message: failure.text,
      code: "auth-failed",
      fix: "check the mailbox's password or OAuth grant, then fix the config",
      rejectedOnce: true,
    };
  }
  return { action: "back-off", text: failure.text, code: failure.kind, ...(failure.retryAfterMs !== undefined ? { retryAfterMs: failure.retryAfterMs } : {}) };
}
