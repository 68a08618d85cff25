/**
 * How Postroom recognises its own mail when it comes back (loops): smtp-sender stamps every
 * message it sends, and the archiver's classifier looks for the stamp and for our Message-IDs in
 * received mail. Both sides read these, so the spelling lives here once.
 */

/** The header smtp-sender puts on every message it sends; its value is {@link loopStamp}. */
export const LOOP_HEADER = "X-Postroom-Loop";

/** The stamp of one mailbox: `<tenant>/<mailbox>`. */
export function loopStamp(tenant: string, mailbox: string): string {
  return `${tenant}/${mailbox}`;
}

/**
 * smtp-sender's Message-IDs: `<` 32 lower-case hex digits (a hash of the command id) `.postroom@`
 * the mailbox's domain `>` (services/smtp-sender/src/compose.ts `messageIdFor`).
 */
export const POSTROOM_MESSAGE_ID = /<[0-9a-f]{32}\.postroom@[^<>\s]+>/i;
