import { createHash } from "node:crypto";
import { isValidAddress } from "@postroom/contracts";

/** Prefixes mail clients put before a subject when replying or forwarding, in several languages. */
const REPLY_PREFIX = /^\s*((re|aw|sv|vs|antw|odp|r|rif|res|wg|fw|fwd|tr|rv|enc)\s*(\[\d+\])?\s*:\s*)+/i;

/** `Re: <subject>` exactly once, whatever prefixes (Re:, AW:, SV:, Fw: …) the original carried. */
export function replySubject(original: string): string {
  return `Re: ${original.replace(REPLY_PREFIX, "").trim()}`;
}

export function forwardSubject(original: string): string {
  return `Fwd: ${original.replace(REPLY_PREFIX, "").trim()}`;
}

/**
 * The Message-ID of a send command: derived from the command id, so a retried or redelivered
 * command carries the same id and receivers (and our own archive) can recognise a duplicate.
 */
export function messageIdFor(commandId: string, address: string): string {
  const domain = address.split("@")[1] ?? "postroom.invalid";
  return `<${createHash("sha256").update(commandId).digest("hex").slice(0, 32)}.postroom@${domain}>`;
}

/** References for a reply: the original's references, then the original itself (RFC 5322 §3.6.4). */
export function replyReferences(original: { rfcMessageId: string; references: string[] }): string[] {
  return [...original.references.filter((r) => r !== original.rfcMessageId), original.rfcMessageId];
}

/** Merges recipients, dropping duplicates (case-insensitive) and addresses already in an earlier list. */
export function mergeRecipients(to: string[], cc: string[], bcc: string[]): { to: string[]; cc: string[]; bcc: string[] } {
  const seen = new Set<string>();
  const take = (list: string[]) =>
    list.filter((a) => {
      const k = a.trim().toLowerCase();
      if (seen.has(k)) return false;
      seen.add(k);
      return true;
    });
  return { to: take(to), cc: take(cc), bcc: take(bcc) };
}

/** Header values must never carry CR, LF or other control characters (header injection). */
export function assertSafeHeader(field: string, value: string): void {
  // eslint-disable-next-line no-control-regex -- matching control characters is the point
  if (/[\u0000-\u0008\u000a-\u001f\u007f]/.test(value)) {
    throw new UnsafeHeaderError(`${field} contains a line break or control character; refused to prevent header injection`);
  }
}

/** The command was refused before anything was sent (bad address, header injection, too large, not allowed). */
export class RefusedCommandError extends Error {
  override name = "RefusedCommandError";
}

export class UnsafeHeaderError extends RefusedCommandError {
  override name = "UnsafeHeaderError";
}

/**
 * A subject taken from a received message, made safe for our own header: a hostile sender's
 * control characters become spaces. (An agent's own subject with them is refused instead.)
 */
export function cleanReceivedSubject(subject: string): string {
  // eslint-disable-next-line no-control-regex -- control characters are what must go
  return subject.replace(/[\u0000-\u001f\u007f]+/g, " ").trim();
}

/** Refuses anything but a bare address (`ann@example.com`), naming the field and the fix. */
export function assertAddress(field: string, value: string): void {
  assertSafeHeader(field, value);
  if (!isValidAddress(value)) {
    throw new InvalidAddressError(`${field} "${value}" is not a valid e-mail address: give a bare address such as ann@example.com (no name, no angle brackets)`);
  }
}

export class InvalidAddressError extends RefusedCommandError {
  override name = "InvalidAddressError";
}

/** The original as far as a reply or forward needs it. */
export interface OriginalMessage {
  rfcMessageId: string;
  references: string[];
  subject: string;
  from: string;
  fromName: string | null;
  replyTo: string[];
  to: string[];
  cc: string[];
  date: Date | null;
  text: string | null;
  html: string | null;
}

function who(original: Pick<OriginalMessage, "from" | "fromName">): string {
  return original.fromName ? `${original.fromName} <${original.from}>` : original.from;
}

/** The quoted original under a reply's text: the attribution line, then every line with `> `. */
export function quoteText(original: Pick<OriginalMessage, "from" | "fromName" | "date" | "text" | "html">): string {
  const body = original.text ?? (original.html ? htmlToText(original.html) : "");
  const when = original.date ? `On ${original.date.toUTCString()}, ` : "";
  return `${when}${who(original)} wrote:\n${body.replace(/\r\n/g, "\n").split("\n").map((l) => (l === "" ? ">" : `> ${l}`)).join("\n")}`;
}

/** The quoted original under a reply's HTML: a cite blockquote, as mail clients render it. */
export function quoteHtml(original: Pick<OriginalMessage, "from" | "fromName" | "date" | "text" | "html">): string {
  const when = original.date ? `On ${escapeHtml(original.date.toUTCString())}, ` : "";
  const inner = original.html ?? `<pre style="white-space:pre-wrap">${escapeHtml(original.text ?? "")}</pre>`;
  return `<div class="postroom-quote-attribution">${when}${escapeHtml(who(original))} wrote:</div>\n<blockquote type="cite" style="margin:0 0 0 .8ex;border-left:1px solid #ccc;padding-left:1ex">${inner}</blockquote>`;
}

/** The header block a forwarded message starts with, in text and HTML. */
export function forwardedBlock(original: OriginalMessage): { text: string; html: string } {
  const lines: [string, string][] = [
    ["From", who(original)],
    ...(original.date ? [["Date", original.date.toUTCString()] as [string, string]] : []),
    ["Subject", original.subject],
    ["To", original.to.join(", ")],
    ...(original.cc.length ? [["Cc", original.cc.join(", ")] as [string, string]] : []),
  ];
  const text = `---------- Forwarded message ----------\n${lines.map(([k, v]) => `${k}: ${v}`).join("\n")}\n\n${original.text ?? (original.html ? htmlToText(original.html) : "")}`;
  const html = `<div>---------- Forwarded message ----------<br>${lines.map(([k, v]) => `${k}: ${escapeHtml(v)}`).join("<br>")}</div><br>${
    original.html ?? `<pre style="white-space:pre-wrap">${escapeHtml(original.text ?? "")}</pre>`
  }`;
  return { text, html };
}

export function escapeHtml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

/** The agent's plain text as HTML paragraphs, when the original has HTML and the agent wrote none. */
export function textToHtml(text: string): string {
  return text
    .replace(/\r\n/g, "\n")
    .split(/\n{2,}/)
    .map((p) => `<p>${escapeHtml(p).replace(/\n/g, "<br>")}</p>`)
    .join("\n");
}

/** A rough text rendering of HTML for the text part's quote when the original had no text part. */
export function htmlToText(html: string): string {
  return html
    .replace(/<(script|style)[\s\S]*?<\/\1>/gi, "")
    .replace(/<br\s*\/?>|<\/p>|<\/div>/gi, "\n")
    .replace(/<[^>]+>/g, "")
    .replace(/&nbsp;/g, " ")
    .replace(/&lt;/g, "<")
    .replace(/&gt;/g, ">")
    .replace(/&quot;/g, '"')
    .replace(/&amp;/g, "&")
    .replace(/\n{3,}/g, "\n\n")
    .trim();
}
