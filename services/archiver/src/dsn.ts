/**
 * Reads a delivery status notification (RFC 3464) far enough to link it to the message that
 * bounced: that message's Message-ID (from the returned `message/rfc822` or
 * `text/rfc822-headers` part, or — for the non-standard bounces of qmail, Exim and old Exchange —
 * a `Message-ID:` line of the copy quoted in the body), the status code (5.1.1) and the remote
 * server's words (Diagnostic-Code). Pure: the parser worker calls it with the parts it decoded.
 */
export interface DeliveryReport {
  /** The RFC Message-ID (`<…>`) of the message the report is about, when it could be found. */
  of: string | null;
  /** The recipient's status code, e.g. `5.1.1` (the first failed recipient, else the first). */
  status: string | null;
  /** The remote server's words (Diagnostic-Code without its type), at most 1,000 characters. */
  diagnostic: string | null;
}

export interface ReportPart {
  contentType: string;
  content: Buffer | string;
}

const STATUS_TYPES = /^message\/(global-)?delivery-status\b/i;
const ORIGINAL_TYPES = /^(message\/(rfc822|global)|text\/rfc822-headers|message\/global-headers)\b/i;

/** Header fields of one block of `Name: value` lines, folded lines joined, names lower-cased. */
function fields(block: string): Map<string, string> {
  const out = new Map<string, string>();
  let last: string | undefined;
  for (const line of block.split(/\r?\n/)) {
    if (/^[ \t]/.test(line) && last !== undefined) {
      out.set(last, `${out.get(last)!} ${line.trim()}`);
      continue;
    }
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    last = line.slice(0, colon).trim().toLowerCase();
    if (!out.has(last)) out.set(last, line.slice(colon + 1).trim());
  }
  return out;
}

/** The header section of a message: everything before the first empty line. */
function headerSection(text: string): string {
  const end = text.search(/\r?\n\r?\n/);
  return end < 0 ? text : text.slice(0, end);
}

function messageIdOf(value: string | undefined): string | null {
  const m = value === undefined ? null : /<[^<>\s]+@[^<>\s]+>/.exec(value);
  return m ? m[0] : null;
}

/**
 * The report in these parts, or null when there is nothing to read (no status part, no returned
 * original, no quoted Message-ID).
 */
export function readDeliveryReport(parts: readonly ReportPart[], text: string | null): DeliveryReport | null {
  const asText = (c: Buffer | string) => (typeof c === "string" ? c : c.toString("utf8"));
  let status: string | null = null;
  let diagnostic: string | null = null;
  let envelopeId: string | null = null;
  const statusPart = parts.find((p) => STATUS_TYPES.test(p.contentType));
  // mailparser folds a message/delivery-status part into the text body; read it there then.
  const inText = text === null ? -1 : text.search(/^(Reporting-MTA|Final-Recipient|Original-Recipient):/im);
  const statusText = statusPart ? asText(statusPart.content) : inText >= 0 ? text!.slice(inText) : undefined;
  if (statusText !== undefined) {
    const blocks = statusText.split(/\r?\n[ \t]*\r?\n/).map(fields).filter((f) => f.size > 0);
    envelopeId = blocks[0]?.get("original-envelope-id") ?? null;
    const recipients = blocks.filter((b) => b.has("action") || b.has("status"));
    const chosen =
      recipients.find((b) => /^failed/i.test(b.get("action") ?? "")) ?? recipients.find((b) => /^delayed/i.test(b.get("action") ?? "")) ?? recipients[0];
    if (chosen) {
      status = /\d\.\d{1,3}\.\d{1,3}/.exec(chosen.get("status") ?? "")?.[0] ?? null;
      const code = chosen.get("diagnostic-code");
      diagnostic = code ? code.replace(/^[a-z0-9-]+\s*;\s*/i, "").slice(0, 1000) : null;
    }
  }
  let of: string | null = null;
  for (const p of parts) {
    if (!ORIGINAL_TYPES.test(p.contentType)) continue;
    of = messageIdOf(fields(headerSection(asText(p.content))).get("message-id"));
    if (of) break;
  }
  // Non-standard bounces quote the original in the body: take the first Message-ID line there.
  if (!of && text) of = messageIdOf(/^[ \t>]*Message-ID:[ \t]*(.*)$/im.exec(text)?.[1]);
  if (!of && envelopeId) of = messageIdOf(envelopeId);
  if (!status && text) status = /\b([45]\.\d{1,3}\.\d{1,3})\b/.exec(text)?.[1] ?? null;
  if (of === null && status === null && diagnostic === null) return null;
  return { of, status, diagnostic };
}
