import { mailboxOfSubject, type SubjectMailbox } from "@postroom/contracts";
import type { Pool } from "@postroom/db";

/** Why an event was refused (the metric's `reason` label: a closed set). */
export type RefusalReason = "not-a-mailbox-subject" | "subject-mismatch" | "unknown-message" | "foreign-message";

/** An event refused by the tenant guard: terminated, never acted on. */
export interface EventRefusal {
  reason: RefusalReason;
  /** What the log says, naming both sides. */
  detail: string;
  /** The tenant and mailbox of the subject, when it is a per-mailbox subject. */
  addressed?: SubjectMailbox;
}

/**
 * The tenant and mailbox a per-mailbox event may speak of are the ones its subject names, as in
 * smtp-sender and token-service: a publisher allowed on one mailbox's subject (or any publisher,
 * with the bus permissions off) must not make asd-bridge act for another by writing another
 * tenant or mailbox into the payload. Pure: `build` is the subject's builder in the contracts.
 */
export function checkSubject(build: (tenant: string, mailbox: string) => string, subject: string, payload: { tenant: string; mailbox: string }): EventRefusal | undefined {
  const addressed = mailboxOfSubject(build, subject);
  if (!addressed) return { reason: "not-a-mailbox-subject", detail: `${subject} is not a subject this consumer reads` };
  if (addressed.tenant !== payload.tenant || addressed.mailbox !== payload.mailbox) {
    return { reason: "subject-mismatch", addressed, detail: `the event names mailbox ${payload.tenant}/${payload.mailbox} but was published on ${addressed.tenant}/${addressed.mailbox}'s subject` };
  }
  return undefined;
}

/**
 * A `mail.archived` event points at a row of `messages` by id, and the session (and so what an
 * agent of the tenant is shown) follows that id. The row must be the archiver's row of this very
 * mailbox and message key: otherwise an event on acme's subject naming globex's row id would put
 * globex's email on an acme agent's desk.
 */
export async function checkArchivedMessage(pool: Pick<Pool, "query">, e: { tenant: string; mailbox: string; messageId: string; messageKey: string }): Promise<EventRefusal | undefined> {
  if (!/^\d{1,19}$/.test(e.messageId)) return { reason: "unknown-message", detail: `message id ${JSON.stringify(e.messageId.slice(0, 40))} is not a row id` };
  const r = await pool.query<{ tenant: string; mailbox: string; message_key: string }>("SELECT tenant, mailbox, message_key FROM messages WHERE id = $1", [e.messageId]);
  const row = r.rows[0];
  if (!row) return { reason: "unknown-message", detail: `no archived message has id ${e.messageId}` };
  if (row.tenant !== e.tenant || row.mailbox !== e.mailbox || row.message_key !== e.messageKey) {
    // The other tenant's key is not repeated in the log: it is theirs.
    return { reason: "foreign-message", detail: `message id ${e.messageId} is not ${e.messageKey} of ${e.tenant}/${e.mailbox}` };
  }
  return undefined;
}
