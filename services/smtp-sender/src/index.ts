export { SmtpSender, buildMessage, compileMessage } from "./sender.js";
export type { SenderOptions, SmtpSenderEvents } from "./sender.js";
export { classifySmtpError, planRetry, defaultRetryPolicy } from "./classify.js";
export type { SmtpVerdict, RetryPlan, RetryPolicy } from "./classify.js";
export { SendRateLimiter } from "./rate-limit.js";
export { GraphSender, GraphSendError, graphTarget, classifyGraphSendError } from "./graph-send.js";
export type { GraphSenderOptions, GraphTarget, GraphRefusal } from "./graph-send.js";
export { SmtpPools, openSocket } from "./smtp-pool.js";
export type { SmtpPoolsOptions, PoolSendResult, CredentialSource } from "./smtp-pool.js";
export { transportOptions, defaultPort, defaultDeadlines } from "./transport.js";
export type { SmtpDeadlines } from "./transport.js";
export {
  replySubject,
  forwardSubject,
  messageIdFor,
  mergeRecipients,
  assertSafeHeader,
  assertAddress,
  quoteText,
  quoteHtml,
  forwardedBlock,
  UnsafeHeaderError,
  InvalidAddressError,
  RefusedCommandError,
} from "./compose.js";
export type { OriginalMessage } from "./compose.js";
