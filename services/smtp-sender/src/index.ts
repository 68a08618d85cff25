export { SmtpSender, buildMessage } from "./sender.js";
export type { SenderOptions, SmtpSenderEvents } from "./sender.js";
export { classifySmtpError, planRetry, defaultRetryPolicy } from "./classify.js";
export type { SmtpVerdict, RetryPlan, RetryPolicy } from "./classify.js";
export { SendRateLimiter } from "./rate-limit.js";
export { transportOptions, defaultPort, defaultDeadlines } from "./transport.js";
export type { SmtpDeadlines } from "./transport.js";
export {
  replySubject,
  forwardSubject,
  messageIdFor,
  mergeRecipients,
  assertSafeHeader,
  assertAddress,
  replyAllRecipients,
  replyRecipients,
  quoteText,
  quoteHtml,
  forwardedBlock,
  UnsafeHeaderError,
  InvalidAddressError,
  RefusedCommandError,
} from "./compose.js";
export type { OriginalMessage } from "./compose.js";
