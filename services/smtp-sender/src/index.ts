export { SmtpSender } from "./sender.js";
export type { SenderOptions } from "./sender.js";
export { classifySmtpError } from "./classify.js";
export type { SmtpVerdict } from "./classify.js";
export { replySubject, forwardSubject, messageIdFor, mergeRecipients, assertSafeHeader, UnsafeHeaderError } from "./compose.js";
