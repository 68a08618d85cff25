/**
 * Every NATS name Postroom uses is spelled here and nowhere else.
 *
 * A namespace ("root") prefixes all of them so that one NATS account can carry several isolated
 * Postroom installations — and, above all, so that every test file gets its own subjects, streams
 * and buckets on the shared test server. Production uses the default root, `postroom`.
 */

const TOKEN = /^[a-z0-9][a-z0-9_-]{0,63}$/;

/** Thrown when a tenant, mailbox or queue id cannot be used as a NATS subject token. */
export class InvalidTokenError extends Error {
  override name = "InvalidTokenError";
  constructor(what: string, value: string) {
    super(
      `${what} "${value}" cannot be used in a NATS name: use 1-64 lowercase letters, digits, "-" or "_", starting with a letter or digit`,
    );
  }
}

/** Checks that a value is usable as one subject token (and inside stream/consumer/bucket names). */
export function token(what: string, value: string): string {
  if (!TOKEN.test(value)) throw new InvalidTokenError(what, value);
  return value;
}

/** Subject builders. Events are past tense, commands imperative; variable tokens come last. */
export interface Subjects {
  /** imap-poller → archiver: a message was fetched and its raw bytes stored in the raw-mail object store. */
  mailReceived(tenant: string, mailbox: string): string;
  /** archiver → asd-bridge, imap-poller: the message is on disk and in PostgreSQL. */
  mailArchived(tenant: string, mailbox: string): string;
  /** asd-bridge, archiver (alerts) → smtp-sender: send this message. */
  mailSend(tenant: string, mailbox: string): string;
  /** smtp-sender → archiver, asd-bridge: the SMTP server accepted the message. */
  mailSent(tenant: string, mailbox: string): string;
  /** smtp-sender → archiver, asd-bridge: the message could not be sent. */
  mailSendFailed(tenant: string, mailbox: string): string;
  /** asd-bridge → anyone: a session was offered to the ACD. */
  sessionOffered(tenant: string, mailbox: string): string;
  /** asd-bridge → anyone: an agent has the session. */
  sessionAssigned(tenant: string, mailbox: string): string;
  /** asd-bridge → anyone: the session ended with an outcome. */
  sessionCompleted(tenant: string, mailbox: string): string;
  /** archiver → smtp-sender (alert mail), operators: the archive disk crossed a threshold. */
  diskAlert(tenant: string, mailbox: string): string;
  /** archiver → operators: the loop breaker stopped offering one sender's mail to this mailbox. */
  loopAlert(tenant: string, mailbox: string): string;
  /** imap-poller, token-service → status watchers: the mailbox's state changed (also kept in KV). */
  mailboxStatus(tenant: string, mailbox: string): string;
  /** request-reply to token-service: give me a credential for this mailbox. */
  credentialRequest(tenant: string, mailbox: string): string;
  /** request-reply to token-service: the server refused the credential you gave me. */
  credentialRejected(tenant: string, mailbox: string): string;
  /** request-reply to token-service (from `postroom auth sign-in`): start a delegated sign-in for this mailbox. */
  signIn(tenant: string, mailbox: string): string;
  /** Wildcards used by stream definitions and consumers. */
  wildcard: {
    mailReceived(tenant?: string): string;
    mailArchived(tenant?: string): string;
    mailSend(tenant?: string): string;
    mailSent(tenant?: string): string;
    mailSendFailed(tenant?: string): string;
    session(tenant?: string): string;
    diskAlert(tenant?: string): string;
    loopAlert(tenant?: string): string;
    mailboxStatus(tenant?: string): string;
    credentialRequest(tenant?: string): string;
    credentialRejected(tenant?: string): string;
    signIn(tenant?: string): string;
  };
}

export interface StreamNames {
  /** Mail lifecycle events: received, archived, sent, send-failed. */
  mail: string;
  /** Send commands for smtp-sender (work queue: each command is taken once). */
  sendCommands: string;
  /** Session lifecycle events from asd-bridge. */
  sessions: string;
  /** Disk and other operator alerts. */
  alerts: string;
}

export interface ConsumerNames {
  /** archiver, on mail.received (optionally one per tenant). */
  archiverReceived(tenant?: string): string;
  /** archiver, on mail.sent (to keep agents' replies in the history). */
  archiverSent(tenant?: string): string;
  /** asd-bridge, on mail.archived. */
  asdBridgeArchived(tenant?: string): string;
  /** asd-bridge, on mail.sent (each agent reply's state for the desktop). */
  asdBridgeSent(tenant?: string): string;
  /** asd-bridge, on mail.send-failed (nats-server 2.9 has one filter subject per consumer, so two). */
  asdBridgeSendFailed(tenant?: string): string;
  /** smtp-sender, on mail.send commands. */
  smtpSender(tenant?: string): string;
  /** imap-poller's per-mailbox commit consumer on mail.archived (after-import actions). */
  pollerCommit(tenant: string, mailbox: string): string;
}

export interface BucketNames {
  /** KV: per-folder UIDVALIDITY + last UID (IMAP) or seen UIDLs (POP3). */
  cursors: string;
  /** KV: which imap-poller replica owns which mailbox. */
  leases: string;
  /** KV: the latest MailboxStatus per mailbox. */
  mailboxStatus: string;
  /** KV: ingestion control (pause/resume per tenant), written by the archiver. */
  control: string;
  /** Object store: raw messages between imap-poller and archiver. */
  rawMail: string;
  /**
   * KV: per mailbox folder, the message keys imap-poller published, indexed by Message-ID +
   * SHA-256 of the raw message, so a folder whose UIDVALIDITY changed is re-mapped, not re-offered.
   */
  ingested: string;
  /** KV: the latest `AcdStatus` per tenant, written by asd-bridge (`acdStatusKey`). */
  acdStatus: string;
  /**
   * KV: delegated OAuth grants (refresh tokens) per mailbox (`mailboxKey`), envelope-encrypted by
   * token-service, the only service that may read or write it.
   */
  oauthGrants: string;
  /** KV: smtp-sender's `SendReceipt` per command (`sendReceiptKey`), the server's 250 made durable. */
  sendReceipts: string;
}

export interface Names {
  readonly root: string;
  readonly subjects: Subjects;
  readonly streams: StreamNames;
  readonly consumers: ConsumerNames;
  readonly buckets: BucketNames;
  /** Key of a mailbox in the KV buckets (`<tenant>.<mailbox>`). */
  mailboxKey(tenant: string, mailbox: string): string;
  /**
   * Key of a mailbox's outgoing (SMTP) status in the mailbox-status bucket
   * (`<tenant>.<mailbox>.smtp`), written by smtp-sender beside the poller's entry, never over it.
   */
  mailboxSmtpKey(tenant: string, mailbox: string): string;
  /**
   * Key of a mailbox's authentication state in the mailbox-status bucket (`<tenant>.<mailbox>.auth`),
   * written by token-service beside the poller's entry, never over it (`MailboxAuthStatus`).
   */
  mailboxAuthKey(tenant: string, mailbox: string): string;
  /** Key of a tenant's ACD status in the acd-status bucket (`<tenant>`), written by asd-bridge (`AcdStatus`). */
  acdStatusKey(tenant: string): string;
  /** Key of a send command's receipt in the send-receipts bucket (`<tenant>.<command id, base64url>`). */
  sendReceiptKey(tenant: string, commandId: string): string;
}

/** Builds every name under one namespace root (default `postroom`). */
export function names(root = "postroom"): Names {
  token("namespace root", root);
  const up = root.toUpperCase().replaceAll("-", "_");
  const s = (tenant: string, ...rest: string[]) => [root, token("tenant id", tenant), ...rest].join(".");
  const w = (tenant: string | undefined, ...rest: string[]) =>
    [root, tenant === undefined ? "*" : token("tenant id", tenant), ...rest].join(".");
  const m = (mailbox: string) => token("mailbox id", mailbox);
  const perTenant = (base: string, tenant?: string) => (tenant === undefined ? base : `${base}-${token("tenant id", tenant)}`);

  return {
    root,
    subjects: {
      mailReceived: (t, mb) => s(t, "mail", "received", m(mb)),
      mailArchived: (t, mb) => s(t, "mail", "archived", m(mb)),
      mailSend: (t, mb) => s(t, "mail", "send", m(mb)),
      mailSent: (t, mb) => s(t, "mail", "sent", m(mb)),
      mailSendFailed: (t, mb) => s(t, "mail", "send-failed", m(mb)),
      sessionOffered: (t, mb) => s(t, "session", "offered", m(mb)),
      sessionAssigned: (t, mb) => s(t, "session", "assigned", m(mb)),
      sessionCompleted: (t, mb) => s(t, "session", "completed", m(mb)),
      diskAlert: (t, mb) => s(t, "alert", "disk", m(mb)),
      loopAlert: (t, mb) => s(t, "alert", "loop", m(mb)),
      mailboxStatus: (t, mb) => s(t, "mailbox", "status", m(mb)),
      credentialRequest: (t, mb) => s(t, "auth", "credential", m(mb)),
      credentialRejected: (t, mb) => s(t, "auth", "rejected", m(mb)),
      signIn: (t, mb) => s(t, "auth", "sign-in", m(mb)),
      wildcard: {
        mailReceived: (t) => w(t, "mail", "received", "*"),
        mailArchived: (t) => w(t, "mail", "archived", "*"),
        mailSend: (t) => w(t, "mail", "send", "*"),
        mailSent: (t) => w(t, "mail", "sent", "*"),
        mailSendFailed: (t) => w(t, "mail", "send-failed", "*"),
        session: (t) => w(t, "session", "*", "*"),
        diskAlert: (t) => w(t, "alert", "disk", "*"),
        loopAlert: (t) => w(t, "alert", "loop", "*"),
        mailboxStatus: (t) => w(t, "mailbox", "status", "*"),
        credentialRequest: (t) => w(t, "auth", "credential", "*"),
        credentialRejected: (t) => w(t, "auth", "rejected", "*"),
        signIn: (t) => w(t, "auth", "sign-in", "*"),
      },
    },
    streams: {
      mail: `${up}_MAIL`,
      sendCommands: `${up}_SEND_COMMANDS`,
      sessions: `${up}_SESSIONS`,
      alerts: `${up}_ALERTS`,
    },
    consumers: {
      archiverReceived: (t) => perTenant("archiver", t),
      archiverSent: (t) => perTenant("archiver-sent", t),
      asdBridgeArchived: (t) => perTenant("asd-bridge", t),
      asdBridgeSent: (t) => perTenant("asd-bridge-sent", t),
      asdBridgeSendFailed: (t) => perTenant("asd-bridge-send-failed", t),
      smtpSender: (t) => perTenant("smtp-sender", t),
      pollerCommit: (t, mb) => `imap-poller-${token("tenant id", t)}-${m(mb)}`,
    },
    buckets: {
      cursors: `${root}-cursors`,
      leases: `${root}-leases`,
      mailboxStatus: `${root}-mailbox-status`,
      control: `${root}-control`,
      rawMail: `${root}-raw-mail`,
      ingested: `${root}-ingested`,
      acdStatus: `${root}-acd-status`,
      oauthGrants: `${root}-oauth-grants`,
      sendReceipts: `${root}-send-receipts`,
    },
    mailboxKey: (t, mb) => `${token("tenant id", t)}.${m(mb)}`,
    mailboxSmtpKey: (t, mb) => `${token("tenant id", t)}.${m(mb)}.smtp`,
    mailboxAuthKey: (t, mb) => `${token("tenant id", t)}.${m(mb)}.auth`,
    acdStatusKey: (t) => token("tenant id", t),
    // A command id is any string of 8–128 characters; base64url keeps every one a KV-safe token.
    sendReceiptKey: (t, commandId) => `${token("tenant id", t)}.${Buffer.from(commandId, "utf8").toString("base64url")}`,
  };
}

/** The tenant and mailbox a per-mailbox subject names. */
export interface SubjectMailbox {
  tenant: string;
  mailbox: string;
}

/**
 * Which tenant and mailbox `subject` names, if it is exactly what `build` makes for some pair
 * (`build` is one of the per-mailbox builders, e.g. `n.subjects.credentialRequest`). The pair is
 * read from the subject and then checked by building the subject again, so a subject of another
 * kind, another namespace or with extra tokens matches nothing — callers never pick tokens by
 * position on trust.
 */
export function mailboxOfSubject(build: (tenant: string, mailbox: string) => string, subject: string): SubjectMailbox | undefined {
  const tokens = subject.split(".");
  // Every per-mailbox subject is <root>.<tenant>.<area>.<event>.<mailbox>: the root is one token.
  const tenant = tokens[1];
  const mailbox = tokens[tokens.length - 1];
  if (tenant === undefined || mailbox === undefined || tokens.length < 3) return undefined;
  try {
    return build(tenant, mailbox) === subject ? { tenant, mailbox } : undefined;
  } catch (error) {
    if (error instanceof InvalidTokenError) return undefined;
    throw error;
  }
}
