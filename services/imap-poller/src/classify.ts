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
  const e = error as { authenticationFailed?: boolean; responseText?: string; serverResponseCode?: string; message?: string; code?: string };
  const text = e?.responseText ?? e?.message ?? String(error);
  // Exchange Online: "Request is throttled. Suggested Backoff Time: 12345 milliseconds"
  const throttle = /Suggested Backoff Time:\s*(\d+)/i.exec(text);
  if (throttle) return { kind: "throttled", text, retryAfterMs: Number(throttle[1]) };
  if (e?.authenticationFailed || e?.serverResponseCode === "AUTHENTICATIONFAILED" || /AUTHENTICATE failed|authentication failed|invalid credentials|LOGIN failed/i.test(text)) {
    return { kind: "auth", text };
  }
  return { kind: "transient", text };
}
