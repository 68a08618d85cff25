/**
 * Who a reply goes to: the one rule. asd-bridge uses it to show the agent the recipients before
 * sending (the agent may change them), smtp-sender uses it when a command leaves the recipients to
 * it. Until this module there were two rules (the agent API put the original's To in CC,
 * smtp-sender put it in To and added it again), and the second silently won.
 *
 * The rule, as common mail clients apply it:
 * - reply: the original's Reply-To when it has one (web forms and ticketing systems set it; the
 *   customer reads that address, not the form's sender), else its From;
 * - reply-all: the same first recipient(s), then the original's To in To and its CC in CC;
 * - never one of the mailbox's own addresses (the customer must not get a copy addressed to the
 *   contact centre, and a copy to ourselves would come back as new mail);
 * - each address once, case-insensitively, To before CC;
 * - addresses from the original's headers that cannot be sent to (group syntax, garbage) are left
 *   out rather than refusing the whole reply.
 */

/** The parts of the original a reply's recipients depend on (addresses as archived: bare, lower case). */
export interface ReplyOriginal {
  from: string;
  replyTo: readonly string[];
  to: readonly string[];
  cc: readonly string[];
}

/**
 * A deliberately plain addr-spec check: one `@`, no spaces, quotes, angle brackets or control
 * characters, a dotted domain. Quoted local parts and address literals are legal in RFC 5321 but
 * never come from an agent's form, and accepting them is how header and SMTP command injection
 * start; IDN domains must arrive as punycode.
 */
const ADDRESS = /^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$/;

/** True for a bare, well-formed address without control characters: one smtp-sender will send to. */
export function isValidAddress(value: string): boolean {
  // eslint-disable-next-line no-control-regex -- control characters are what must be excluded
  return value.length <= 254 && ADDRESS.test(value) && !/[\u0000-\u001f\u007f]/.test(value);
}

/**
 * The recipients of a reply or reply-all to `original` sent from a mailbox whose own addresses are
 * `own` (its address, and any aliases). Pure.
 */
export function replyRecipients(kind: "reply" | "reply-all", original: ReplyOriginal, own: readonly string[]): { to: string[]; cc: string[] } {
  const seen = new Set(own.map((a) => a.trim().toLowerCase()));
  const take = (list: readonly string[]) => {
    const out: string[] = [];
    for (const a of list) {
      const k = a.trim().toLowerCase();
      if (!isValidAddress(k) || seen.has(k)) continue;
      seen.add(k);
      out.push(k);
    }
    return out;
  };
  const first = original.replyTo.some(isValidAddress) ? original.replyTo : [original.from];
  if (kind === "reply") return { to: take(first), cc: [] };
  const to = take([...first, ...original.to]);
  return { to, cc: take(original.cc) };
}
