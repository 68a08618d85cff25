/**
 * Who owns which table: the one place that says it. The database roles (roles.ts) are granted
 * from this map and nothing else, and a test fails when a table of the migrated schema is missing
 * here or when a service's SQL touches a table its role gets no grant for.
 *
 * An owner reads and writes its tables (SELECT, INSERT, UPDATE, DELETE, and USAGE on their
 * sequences). Every other service gets nothing, except the reads listed under `reads`: places
 * where a service today reads another's table directly. Each is a known coupling that issue 12
 * ("one owner for every piece of state") replaces with a NATS request to the owner; until then
 * the reader gets SELECT on that table and nothing more.
 */

/** The services that use PostgreSQL. token-service and imap-poller have no database access at all. */
export const DATABASE_SERVICES = ["archiver", "asd-bridge", "smtp-sender"] as const;
export type DatabaseService = (typeof DATABASE_SERVICES)[number];

/** A read of another service's table that the ownership issue (12) will replace with a NATS request. */
export interface KnownRead {
  /** The service reading. */
  service: DatabaseService;
  /** Where and why, so the reader can be found and replaced. */
  why: string;
}

export interface TableOwnership {
  /** The service that writes it; "migrations" for the bookkeeping table only migrate() writes. */
  owner: DatabaseService | "migrations";
  /** SELECT for these other services, each a documented coupling. */
  reads: KnownRead[];
  /**
   * SELECT and INSERT (never UPDATE or DELETE) for these other services: only for an append-only
   * table, the audit trail, which several services add their own rows to.
   */
  appends?: KnownRead[];
}

const SMTP_SENDER_ORIGINAL = "smtp-sender's #original: the message a reply or forward quotes, its recipients and attachments";
const ASD_BRIDGE_DESKTOP = "asd-bridge's session view (sessions.ts) and reply recipients: the email behind a session";

/** Every table of the schema, by name. */
export const TABLE_OWNERSHIP: Readonly<Record<string, TableOwnership>> = {
  // migrate()'s own record. Every service reads it: a service connected as its own role applies no
  // migration and waits until the schema is at the version it was built for (waitForSchema).
  schema_migrations: {
    owner: "migrations",
    reads: DATABASE_SERVICES.map((service) => ({ service, why: "waits at start-up until the migrations it needs are applied (waitForSchema)" })),
  },

  // The archive: what arrived and what was sent, threaded.
  mailboxes: { owner: "archiver", reads: [] },
  conversations: { owner: "archiver", reads: [] },
  messages: {
    owner: "archiver",
    reads: [
      { service: "asd-bridge", why: `${ASD_BRIDGE_DESKTOP}; bounces of agent replies (replies.ts); arrival time for the time-to-offer metric (runtime observe.ts)` },
      { service: "smtp-sender", why: `${SMTP_SENDER_ORIGINAL}; the archived copy of a sent reply for the Sent-folder copy` },
    ],
  },
  addresses: {
    owner: "archiver",
    reads: [
      { service: "asd-bridge", why: `${ASD_BRIDGE_DESKTOP} (From, To, Cc, Reply-To)` },
      { service: "smtp-sender", why: SMTP_SENDER_ORIGINAL },
    ],
  },
  attachments: {
    owner: "archiver",
    reads: [
      { service: "asd-bridge", why: `${ASD_BRIDGE_DESKTOP} (the attachment list and downloads)` },
      { service: "smtp-sender", why: `${SMTP_SENDER_ORIGINAL} (a forward carries them)` },
    ],
  },
  archive_disk_state: { owner: "archiver", reads: [] },
  loop_breaker: { owner: "archiver", reads: [] },
  // The audit trail: the archiver's own events (message.archived, message.purged, config.reload)
  // and, appended by asd-bridge, every agent's and supervisor's action. Append-only (migration
  // 40's triggers refuse UPDATE, DELETE and TRUNCATE whatever the grants say).
  audit_events: {
    owner: "archiver",
    reads: [],
    appends: [{ service: "asd-bridge", why: "agents' and supervisors' actions through the agent API (recordAudit), and a supervisor's read of her tenant's trail (queryAudit)" }],
  },

  // Sessions: asd-bridge's.
  sessions: { owner: "asd-bridge", reads: [] },
  session_events: { owner: "asd-bridge", reads: [] },
  acd_callbacks: { owner: "asd-bridge", reads: [] },
  agent_replies: { owner: "asd-bridge", reads: [] },

  // Sending: smtp-sender's exactly-once bookkeeping.
  sends: { owner: "smtp-sender", reads: [] },
};

/** A table privilege the roles are granted (or refused). */
export type TablePrivilege = "SELECT" | "INSERT" | "UPDATE" | "DELETE";
export const TABLE_PRIVILEGES: readonly TablePrivilege[] = ["SELECT", "INSERT", "UPDATE", "DELETE"];

/** What a service's role may do on each table, from the map: tables not listed get nothing. */
export function grantsOf(service: DatabaseService, map: Readonly<Record<string, TableOwnership>> = TABLE_OWNERSHIP): Map<string, TablePrivilege[]> {
  const grants = new Map<string, TablePrivilege[]>();
  for (const [table, o] of Object.entries(map)) {
    if (o.owner === service) grants.set(table, [...TABLE_PRIVILEGES]);
    else if (o.appends?.some((r) => r.service === service)) grants.set(table, ["SELECT", "INSERT"]);
    else if (o.reads.some((r) => r.service === service)) grants.set(table, ["SELECT"]);
  }
  return grants;
}
