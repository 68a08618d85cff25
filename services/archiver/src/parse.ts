import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open } from "node:fs/promises";
import { join } from "node:path";
import { simpleParser, type AddressObject, type ParsedMail } from "mailparser";
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
  /** ISO time of the Date header, when it is a valid date. */
  date: string | null;
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
export async function parseToParts(emlPath: string, partsDir: string): Promise<ParsedSummary> {
  const mail = await simpleParser(createReadStream(emlPath), { skipImageLinks: true, keepCidLinks: true, skipTextToHtml: true });
  const taken = new Set<string>();
  const attachments: AttachmentRow[] = [];
  let partBytes = 0;
  let index = 0;
  for (const a of mail.attachments) {
    index++;
    const storedName = sanitizeFileName(a.filename, index, taken);
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
  return summarize(mail, attachments, partBytes);
}

function summarize(mail: ParsedMail, attachments: AttachmentRow[], partBytes: number): ParsedSummary {
  const refs = mail.references === undefined ? [] : Array.isArray(mail.references) ? mail.references : [mail.references];
  const contentTypeLine = mail.headerLines.find((h) => h.key === "content-type")?.line ?? "";
  return {
    messageId: mail.messageId ? clean(mail.messageId) : null,
    inReplyTo: mail.inReplyTo ? clean(mail.inReplyTo) : null,
    references: refs.map(clean),
    subject: clean(mail.subject ?? ""),
    from: addresses(mail.from)[0] ?? null,
    to: addresses(mail.to),
    cc: addresses(mail.cc),
    bcc: addresses(mail.bcc),
    date: mail.date && !Number.isNaN(mail.date.getTime()) ? mail.date.toISOString() : null,
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
 * PostgreSQL text and jsonb refuse U+0000, and a hostile or broken message may well contain it:
 * without this, such a message would fail its insert forever. The raw .eml keeps the real bytes.
 */
export function clean(s: string): string {
  return s.includes("\u0000") ? s.replaceAll("\u0000", "\uFFFD") : s;
}
