import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open } from "node:fs/promises";
import { join } from "node:path";
import { simpleParser, type AddressObject, type ParsedMail } from "mailparser";
import { parseMailDate } from "./dates.js";
import { readDeliveryReport, type DeliveryReport } from "./dsn.js";
import { sanitizeFileName } from "./filenames.js";

export interface ParseLimits {
  /** Messages larger than this are archived raw and not parsed (default 64 MiB). */
  maxBytes: number;
  /** A parse that takes longer is abandoned and its worker replaced (default 30 s). */
  timeoutMs: number;
  /** Heap limit of each parser worker; a message that needs more is archived raw (default 512 MiB). */
  maxMemoryMb: number;
  /** Parser worker threads (default 2). */
  workers: number;
}

export const defaultParseLimits: ParseLimits = { maxBytes: 64 * 1024 * 1024, timeoutMs: 30_000, maxMemoryMb: 512, workers: 2 };

export interface Address {
  address: string;
  name: string | null;
}

export interface AttachmentRow {
  partIndex: number;
  originalName: string | null;
  storedName: string;
  contentType: string;
  contentId: string | null;
  inline: boolean;
  size: number;
  sha256: string;
}

/**
 * What the archiver keeps of a parsed message. Plain data (no Buffers, no Maps) so that it
 * crosses from the parser worker to the main thread by structured clone unchanged.
 */
export interface ParsedSummary {
  messageId: string | null;
  inReplyTo: string | null;
  references: string[];
  subject: string;
  from: Address | null;
  to: Address[];
  cc: Address[];
  bcc: Address[];
  /** Reply-To: where the sender wants answers to go (web forms and ticketing systems set it). */
  replyTo: Address[];
  /** ISO time of the Date header, read leniently (dates.ts); null when absent or unreadable — never the time of parsing. */
  date: string | null;
  /** The Date header as sent (unfolded), null when absent. */
  dateRaw: string | null;
  /** For a delivery status notification: what bounced, its status and the server's words (dsn.ts). */
  report: DeliveryReport | null;
  /** Every header line as received: [lower-case name, whole line]. */
  headerLines: [string, string][];
  text: string | null;
  /** The HTML body as received (decoded, not sanitised: that is the viewer's job). */
  html: string | null;
  /** The top-level Content-Type header value, for DSN detection. */
  contentType: string;
  attachments: AttachmentRow[];
  /** Bytes written under the parts folder. */
  partBytes: number;
}

export type ParseOutcome =
  | { ok: true; summary: ParsedSummary }
  /** `stopped`: the pool was shutting down; not the message's fault, so it must not be archived with this error. */
  | { ok: false; error: string; timedOut: boolean; stopped?: boolean };

/**
 * Parses the message at `emlPath` with mailparser and writes every attachment and inline part
 * into `partsDir` under a sanitized unique name. Runs inside a parser worker (see parse-pool.ts);
 * exported so it can also be exercised directly.
 *
 * mailparser decodes each text part with its declared charset (iconv-lite and encoding-japanese
 * cover ISO-2022-JP, Shift_JIS, windows-125x, KOI8-R, GB2312, Big5, EUC-KR …). Every non-body
 * part — attachments, inline images, message/rfc822, message/delivery-status, text/calendar —
 * comes out as an attachment and is written as its own file; text/plain and text/html body parts
 * become the text and HTML bodies.
 */
export async function parseToParts(emlPath: string, partsDir: string, fd?: number): Promise<ParsedSummary> {
  // Given `fd`, the caller owns the open file and closes it (a worker terminated mid-parse cannot
  // close what it opened, and the unlinked .eml would then hold its disk space until the archiver
  // exits). Otherwise the stream is destroyed here even when the parser stops reading before the
  // end of the file.
  const input = fd === undefined ? createReadStream(emlPath) : createReadStream("", { fd, autoClose: false, start: 0 });
  let mail: ParsedMail;
  try {
    mail = await simpleParser(input, { skipImageLinks: true, keepCidLinks: true, skipTextToHtml: true });
  } finally {
    // (destroy() would close a given fd too, whatever autoClose says: only our own stream is ended.)
    if (fd === undefined) input.destroy();
  }
  const taken = new Set<string>();
  const attachments: AttachmentRow[] = [];
  let partBytes = 0;
  let index = 0;
  for (const a of mail.attachments) {
    index++;
    const storedName = sanitizeFileName(a.filename, index, taken, a.contentType);
    const fh = await open(join(partsDir, storedName), "wx");
    try {
      await fh.writeFile(a.content);
      await fh.sync();
    } finally {
      await fh.close();
    }
    partBytes += a.content.length;
    attachments.push({
      partIndex: index,
      originalName: a.filename === undefined ? null : clean(a.filename),
      storedName,
      contentType: a.contentType,
      contentId: a.contentId ?? a.cid ?? null,
      inline: a.contentDisposition === "inline" || a.related === true,
      size: a.content.length,
      sha256: createHash("sha256").update(a.content).digest("hex"),
    });
  }
  const report = readDeliveryReport(mail.attachments, typeof mail.text === "string" ? mail.text : null);
  return summarize(mail, attachments, partBytes, report);
}

function summarize(mail: ParsedMail, attachments: AttachmentRow[], partBytes: number, report: DeliveryReport | null): ParsedSummary {
  const refs = mail.references === undefined ? [] : Array.isArray(mail.references) ? mail.references : [mail.references];
  const contentTypeLine = mail.headerLines.find((h) => h.key === "content-type")?.line ?? "";
  const dateLine = mail.headerLines.find((h) => h.key === "date")?.line;
  const dateRaw = dateLine === undefined ? null : dateLine.slice(dateLine.indexOf(":") + 1).replace(/\r?\n[ \t]+/g, " ").trim();
  return {
    messageId: mail.messageId ? clean(mail.messageId) : null,
    inReplyTo: mail.inReplyTo ? clean(mail.inReplyTo) : null,
    references: refs.map(clean),
    subject: clean(mail.subject ?? ""),
    from: addresses(mail.from)[0] ?? null,
    to: addresses(mail.to),
    cc: addresses(mail.cc),
    bcc: addresses(mail.bcc),
    replyTo: addresses(mail.replyTo),
    // Not mail.date: mailparser replaces an unreadable Date with the time of parsing.
    date: parseMailDate(dateRaw)?.toISOString() ?? null,
    dateRaw: dateRaw === null ? null : clean(dateRaw),
    report: report && { of: report.of && clean(report.of), status: report.status && clean(report.status), diagnostic: report.diagnostic && clean(report.diagnostic) },
    headerLines: mail.headerLines.map((h) => [h.key, clean(h.line)]),
    text: typeof mail.text === "string" ? clean(mail.text) : null,
    html: typeof mail.html === "string" ? clean(mail.html) : null,
    contentType: clean(contentTypeLine.slice(contentTypeLine.indexOf(":") + 1).trim()),
    attachments,
    partBytes,
  };
}

function addresses(field: AddressObject | AddressObject[] | undefined): Address[] {
  if (!field) return [];
  const list = Array.isArray(field) ? field : [field];
  return list
    .flatMap((f) => f.value)
    .flatMap((v) => (v.group ? v.group : [v]))
    .filter((v) => v.address)
    .map((v) => ({ address: clean(v.address!.toLowerCase()), name: v.name ? clean(v.name) : null }));
}

/**
 * The header section of a raw message — at most `maxBytes` read — as [lower-case name, unfolded
 * value] pairs. For a message the parser could not finish (over a limit, timed out, crashed it):
 * its headers still say whether it is a loop or an auto-reply, and who sent it, which is what the
 * classifier and the loop breaker need.
 */
export async function readRawHeaders(emlPath: string, maxBytes = 256 * 1024): Promise<[string, string][]> {
  const fh = await open(emlPath, "r");
  let text: string;
  try {
    const buffer = Buffer.alloc(maxBytes);
    const { bytesRead } = await fh.read(buffer, 0, maxBytes, 0);
    text = buffer.subarray(0, bytesRead).toString("utf8");
  } finally {
    await fh.close();
  }
  const end = text.search(/\r?\n\r?\n/);
  const out: [string, string][] = [];
  for (const line of (end < 0 ? text : text.slice(0, end)).split(/\r?\n/)) {
    if (/^[ \t]/.test(line) && out.length > 0) out[out.length - 1]![1] += ` ${line.trim()}`;
    else if (line.indexOf(":") > 0) out.push([line.slice(0, line.indexOf(":")).trim().toLowerCase(), clean(line.slice(line.indexOf(":") + 1).trim())]);
  }
  return out;
}

/**
 * PostgreSQL text and jsonb refuse U+0000, and a hostile or broken message may well contain it:
 * without this, such a message would fail its insert forever. The raw .eml keeps the real bytes.
 */
export function clean(s: string): string {
  return s.includes("\u0000") ? s.replaceAll("\u0000", "\uFFFD") : s;
}
