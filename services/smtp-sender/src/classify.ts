import { EXCHANGE_BASIC_SMTP_END } from "@postroom/config";

/**
 * What an SMTP failure means, from the reply code and enhanced status code (RFC 3463).
 * Pure: tested on the replies real servers send.
 */
export type SmtpVerdict =
  | { kind: "retry"; reason: string }
  | { kind: "permanent"; reason: string }
  | { kind: "needs-admin"; reason: string; fix: string };

export function classifySmtpError(error: { responseCode?: number; response?: string; code?: string; message?: string }): SmtpVerdict {
  const text = error.response ?? error.message ?? "unknown error";
  const code = error.responseCode;
  if (code === undefined && /certificate|CERT_|self[- ]signed|unable to verify|hostname\/IP does not match/i.test(text)) {
    // Retrying cannot make an untrusted certificate trusted; someone has to decide.
    return {
      kind: "needs-admin",
      reason: text,
      fix: "the SMTP server's TLS certificate is not trusted: install its CA (NODE_EXTRA_CA_CERTS) or fix the host name; set smtp.verifyCertificate: false only for tests",
    };
  }
  if (code === undefined && error.code === "EAUTH") {
    return { kind: "needs-admin", reason: text, fix: "the server refused the login before answering with a code: check the smtp auth settings" };
  }
  if (code === undefined) return { kind: "retry", reason: text }; // connection-level: timeouts, resets, DNS
  if (/5\.7\.139/.test(text) && /SmtpClientAuthentication is disabled/i.test(text)) {
    return {
      kind: "needs-admin",
      reason: text,
      fix:
        "SMTP AUTH is switched off: run Set-CASMailbox <mailbox> -SmtpClientAuthenticationDisabled $false (or Set-TransportConfig -SmtpClientAuthenticationDisabled $false for the tenant). " +
        `With a password that helps only until ${EXCHANGE_BASIC_SMTP_END.when}, when Exchange Online ends password SMTP AUTH: ${EXCHANGE_BASIC_SMTP_END.fix}`,
    };
  }
  if (/5\.7\.139/.test(text) || /5\.7\.30/.test(text)) {
    // "basic authentication is disabled" (security defaults, authentication policies), other
    // 5.7.139 texts, and 5.7.30 (password SMTP retired): the password path is closed for good;
    // the fix is the one config check and the Softdial import give ahead of the cut-off.
    return { kind: "needs-admin", reason: text, fix: `password SMTP is refused for this mailbox (Exchange Online ends it at ${EXCHANGE_BASIC_SMTP_END.when}): ${EXCHANGE_BASIC_SMTP_END.fix}` };
  }
  if (code === 535 || code === 534) {
    return { kind: "needs-admin", reason: text, fix: "the server refused the login: check the password, or for OAuth consent SMTP.SendAsApp and the mailbox permission" };
  }
  if (code >= 400 && code < 500) return { kind: "retry", reason: text };
  return { kind: "permanent", reason: text };
}

/** What to do with a command after a failed attempt. */
export type RetryPlan = { action: "retry"; delayMs: number } | { action: "give-up"; reason: string };

/** Limits of {@link planRetry}. */
export interface RetryPolicy {
  /** First delay after a 4xx or connection error (default 1 s); doubles per attempt. */
  baseMs: number;
  /** Cap of the doubling (default 5 min: greylisting usually wants 1–5 min). */
  capMs: number;
  /** Delay while the mailbox needs an administrator (default 5 min): retrying faster cannot help. */
  needsAdminDelayMs: number;
  /** Give up (report "failed") when the command is older than this (default 24 h). */
  giveUpAfterMs: number;
}

export const defaultRetryPolicy: RetryPolicy = { baseMs: 1000, capMs: 5 * 60_000, needsAdminDelayMs: 5 * 60_000, giveUpAfterMs: 24 * 3600_000 };

/**
 * Retry, wait for an administrator, or give up — decided from the verdict, the attempt number and
 * the command's age. Pure: `random` is passed in so tests see exact delays. A permanent verdict
 * never gets here; it is reported at once.
 */
export function planRetry(
  verdict: Exclude<SmtpVerdict, { kind: "permanent" }>,
  attempt: number,
  ageMs: number,
  policy: RetryPolicy = defaultRetryPolicy,
  random: () => number = Math.random,
): RetryPlan {
  if (ageMs >= policy.giveUpAfterMs) {
    return { action: "give-up", reason: `gave up after ${attempt} attempts over ${Math.round(ageMs / 60_000)} min; last answer: ${verdict.reason}` };
  }
  if (verdict.kind === "needs-admin") return { action: "retry", delayMs: policy.needsAdminDelayMs };
  const base = Math.min(policy.capMs, policy.baseMs * 2 ** Math.max(0, attempt - 1));
  // Half fixed, half jitter: replicas retrying after one outage do not all come back at once.
  return { action: "retry", delayMs: Math.round(base / 2 + (random() * base) / 2) };
}
