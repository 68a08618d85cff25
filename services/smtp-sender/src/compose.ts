import { createHash } from "node:crypto";

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

export class UnsafeHeaderError extends Error {
  override name = "UnsafeHeaderError";
}
