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
  if (code === undefined) return { kind: "retry", reason: text }; // connection-level: timeouts, resets, DNS
  if (/5\.7\.139/.test(text)) {
    return {
      kind: "needs-admin",
      reason: text,
      fix: "SMTP AUTH is switched off: run Set-CASMailbox <mailbox> -SmtpClientAuthenticationDisabled $false (or Set-TransportConfig -SmtpClientAuthenticationDisabled $false for the tenant)",
    };
  }
  if (/5\.7\.30/.test(text)) return { kind: "needs-admin", reason: text, fix: "password SMTP is retired for this tenant: switch the mailbox's smtp auth to microsoft365 (OAuth)" };
  if (code === 535 || code === 534) {
    return { kind: "needs-admin", reason: text, fix: "the server refused the login: check the password, or for OAuth consent SMTP.SendAsApp and the mailbox permission" };
  }
  if (code >= 400 && code < 500) return { kind: "retry", reason: text };
  return { kind: "permanent", reason: text };
}
