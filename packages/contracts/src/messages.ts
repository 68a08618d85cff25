import { z } from "zod";

/**
 * Payloads that cross a service boundary. Each schema and its type share one name and every
 * payload carries `version: "v1"`, so a consumer can refuse (and dead-letter) a payload it does
 * not understand instead of misreading it.
 */

const v1 = z.literal("v1");
const id = z.string().regex(/^[a-z0-9][a-z0-9_-]{0,63}$/);
const isoTime = z.iso.datetime({ offset: true });

/** Where a message came from; the tuple is the message's identity everywhere (JetStream msg id, SQL unique key). */
export const SourceKey = z.discriminatedUnion("protocol", [
  z.object({
    protocol: z.literal("imap"),
    tenant: id,
    mailbox: id,
    folder: z.string(),
    uidValidity: z.number().int().nonnegative(),
    uid: z.number().int().positive(),
  }),
  z.object({
    protocol: z.literal("pop3"),
    tenant: id,
    mailbox: id,
    uidl: z.string().min(1).max(70),
  }),
  z.object({
    protocol: z.literal("graph"),
    tenant: id,
    mailbox: id,
    /** The folder as configured (a well-known name such as inbox, or a folder id). */
    folder: z.string().min(1),
    /** Graph's immutable message id (`Prefer: IdType="ImmutableId"`): it survives moves. */
    id: z.string().min(1).max(512),
  }),
]);
export type SourceKey = z.infer<typeof SourceKey>;

/** The stable message key: same message at the source → same key, always. */
export function messageKey(key: SourceKey): string {
  switch (key.protocol) {
    case "imap":
      return `${key.tenant}/${key.mailbox}/imap/${encodeURIComponent(key.folder)}/${key.uidValidity}/${key.uid}`;
    case "pop3":
      return `${key.tenant}/${key.mailbox}/pop3/${encodeURIComponent(key.uidl)}`;
    case "graph":
      // Not by folder: an immutable id is the mailbox's, wherever the message is moved.
      return `${key.tenant}/${key.mailbox}/graph/${encodeURIComponent(key.id)}`;
  }
}

/** A reference to bytes in a JetStream object store. */
export const ObjectRef = z.object({
  bucket: z.string(),
  name: z.string(),
  size: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
});
export type ObjectRef = z.infer<typeof ObjectRef>;

export const MailReceived = z.object({
  version: v1,
  messageKey: z.string(),
  source: SourceKey,
  raw: ObjectRef,
  /** Server's INTERNALDATE (IMAP) or the fetch time (POP3). */
  receivedAt: isoTime,
  fetchedAt: isoTime,
  /** false for "import history": archive, but do not offer to agents. */
  offer: z.boolean(),
  /** The message exceeded the mailbox's maximum size: archive raw, flag it. */
  oversize: z.boolean().default(false),
  /**
   * The raw bytes themselves, base64, for a message of at most `INLINE_RAW_MAX_BYTES`: no object
   * store round trips on either side. `raw` still gives their size and SHA-256 (its object name is
   * then never written). Absent: the bytes are in the object store under `raw.name`.
   */
  rawInline: z.string().optional(),
});
export type MailReceived = z.infer<typeof MailReceived>;

/**
 * Raw messages up to this size travel inside `mail.received` (base64: 4/3 of it, well under the
 * stream's 1 MiB message limit with the JSON around it); larger ones go through the object store.
 */
export const INLINE_RAW_MAX_BYTES = 512 * 1024;

export const AutoFlags = z.object({
  autoReply: z.boolean(),
  bounce: z.boolean(),
  loop: z.boolean(),
});
export type AutoFlags = z.infer<typeof AutoFlags>;

/**
 * What the archiver concluded about a received message (services/archiver/src/classify.ts):
 * a person wrote it, or an auto-responder, a delivery status notification, a mailing list or
 * mass mailing, or a mail loop. Sent messages are always "human".
 */
export const Classification = z.enum(["human", "auto-reply", "bounce", "bulk", "loop"]);
export type Classification = z.infer<typeof Classification>;

export const MailArchived = z.object({
  version: v1,
  messageKey: z.string(),
  tenant: id,
  mailbox: id,
  /** Row id in the messages table. */
  messageId: z.string(),
  conversationId: z.string(),
  /** Folder under the archive root holding message.eml, meta.json and the parts. */
  archivePath: z.string(),
  size: z.number().int().nonnegative(),
  sha256: z.string(),
  /** RFC 5322 Message-ID as received, or a derived one when absent. */
  rfcMessageId: z.string(),
  subject: z.string(),
  from: z.string(),
  to: z.array(z.string()),
  cc: z.array(z.string()),
  /** Kept for readers written before `classification`; derived from it (bulk sets none of them). */
  flags: AutoFlags,
  /** The archiver's verdict; events written before it existed read as "human". */
  classification: Classification.default("human"),
  /** The signal that decided the verdict, e.g. "Auto-Submitted: auto-replied" (null for plain human mail). */
  classificationReason: z.string().nullable().default(null),
  /** Set when the message could not be parsed; the raw .eml is archived all the same. */
  parseError: z.string().nullable(),
  offer: z.boolean(),
  receivedAt: isoTime,
  archivedAt: isoTime,
  /** Copied from the received event so the poller can apply its after-import action. */
  source: SourceKey,
});
export type MailArchived = z.infer<typeof MailArchived>;

export const SessionOffered = z.object({
  version: v1,
  sessionId: z.string(),
  tenant: id,
  mailbox: id,
  messageKey: z.string(),
  queue: z.string(),
  acd: z.enum(["builtin", "softdial", "webhook"]),
  offeredAt: isoTime,
  /** Human-readable warnings shown with the session (e.g. the message could not be parsed). */
  warnings: z.array(z.string()),
});
export type SessionOffered = z.infer<typeof SessionOffered>;

export const SessionAssigned = z.object({
  version: v1,
  sessionId: z.string(),
  tenant: id,
  mailbox: id,
  queue: z.string(),
  agent: z.string(),
  assignedAt: isoTime,
});
export type SessionAssigned = z.infer<typeof SessionAssigned>;

export const SessionCompleted = z.object({
  version: v1,
  sessionId: z.string(),
  tenant: id,
  mailbox: id,
  agent: z.string().nullable(),
  outcome: z.string(),
  completedAt: isoTime,
});
export type SessionCompleted = z.infer<typeof SessionCompleted>;

const Address = z.string().min(3).max(320);

export const SendRequested = z.object({
  version: v1,
  /** Stable id of this command; the outgoing Message-ID is derived from it. */
  commandId: z.string().min(8).max(128),
  tenant: id,
  mailbox: id,
  kind: z.enum(["reply", "reply-all", "forward", "new", "alert"]),
  /** messageKey of the email being answered or forwarded. */
  original: z.string().optional(),
  sessionId: z.string().optional(),
  agent: z.string().optional(),
  to: z.array(Address),
  cc: z.array(Address).default([]),
  bcc: z.array(Address).default([]),
  subject: z.string().max(998).optional(),
  text: z.string(),
  html: z.string().optional(),
  forwardAs: z.enum(["attachment", "inline"]).optional(),
  requestedAt: isoTime,
});
export type SendRequested = z.infer<typeof SendRequested>;

export const MailSent = z.object({
  version: v1,
  commandId: z.string(),
  tenant: id,
  mailbox: id,
  rfcMessageId: z.string(),
  inReplyTo: z.string().nullable(),
  references: z.array(z.string()),
  /** The final raw message as sent, for the archive. */
  raw: ObjectRef,
  /**
   * The same bytes, base64, when smtp-sender had them in memory (at most its 256 KiB inline
   * limit): the archiver stores these and reads nothing from the object store, whose reads (an
   * ephemeral consumer per object) stalled the archive of replies for 40 s at a time on a cluster.
   * The object under `raw.name` is still written, for archivers that predate this field.
   */
  rawInline: z.string().optional(),
  envelope: z.object({ from: z.string(), to: z.array(z.string()) }),
  serverResponse: z.string(),
  /**
   * Recipients the server refused while it accepted the others (the message went out to those):
   * each with the server's own words. Absent from events of senders older than this field.
   */
  refused: z.array(z.object({ recipient: z.string(), response: z.string() })).optional(),
  sessionId: z.string().optional(),
  sentAt: isoTime,
});
export type MailSent = z.infer<typeof MailSent>;

/**
 * smtp-sender's receipt of a server's acceptance, in the KV bucket `buckets.sendReceipts` under
 * `sendReceiptKey(tenant, commandId)`. Written beside the `sends` row's "sent" UPDATE the moment
 * the server took the message, so the 250 is durable as soon as either write lands: a sender
 * killed while PostgreSQL is down (the row cannot be written) leaves this behind, and the
 * command's redelivery finds it and never sends again.
 */
export const SendReceipt = z.object({
  version: v1,
  commandId: z.string(),
  serverResponse: z.string(),
  refused: z.array(z.object({ recipient: z.string(), response: z.string() })),
  acceptedAt: isoTime,
});
export type SendReceipt = z.infer<typeof SendReceipt>;

export const SendFailed = z.object({
  version: v1,
  commandId: z.string(),
  tenant: id,
  mailbox: id,
  permanent: z.boolean(),
  reason: z.string(),
  serverResponse: z.string().nullable(),
  responseCode: z.number().int().nullable(),
  failedAt: isoTime,
});
export type SendFailed = z.infer<typeof SendFailed>;

export const DiskAlert = z.object({
  version: v1,
  tenant: id,
  mailbox: id,
  level: z.enum(["warning", "critical", "cleared", "reminder"]),
  archivePath: z.string(),
  usedBytes: z.number().nonnegative(),
  quotaBytes: z.number().nonnegative(),
  filesystemFreeBytes: z.number().nonnegative(),
  percentLeft: z.number(),
  raisedAt: isoTime,
});
export type DiskAlert = z.infer<typeof DiskAlert>;

/**
 * The loop breaker (archiver) stopped offering one sender's mail to a mailbox: more than
 * `maxMessages` arrived within `windowMinutes`. Raised once per episode — again only after the
 * sender has been quiet for a whole window. The messages are archived, never offered.
 */
export const LoopAlert = z.object({
  version: v1,
  tenant: id,
  mailbox: id,
  /** The sender's address (From), lower-cased. */
  sender: z.string(),
  /** Messages from the sender within the window, the one that tripped the breaker included. */
  messages: z.number().int().positive(),
  maxMessages: z.number().int().positive(),
  windowMinutes: z.number().positive(),
  /** The message that tripped the breaker. */
  messageKey: z.string(),
  subject: z.string(),
  raisedAt: isoTime,
});
export type LoopAlert = z.infer<typeof LoopAlert>;

export const MailboxState = z.enum(["connecting", "idle", "polling", "backing-off", "needs-admin", "paused", "stopped"]);
export type MailboxState = z.infer<typeof MailboxState>;

export const MailboxStatus = z.object({
  version: v1,
  tenant: id,
  mailbox: id,
  state: MailboxState,
  owner: z.string().nullable(),
  lastCheckAt: isoTime.nullable(),
  lastMessageAt: isoTime.nullable(),
  backlog: z.number().int().nonnegative(),
  lastError: z
    .object({ message: z.string(), code: z.string().nullable(), fix: z.string().nullable(), at: isoTime })
    .nullable(),
  updatedAt: isoTime,
  /** "imap", "pop3" or "graph" (absent in entries written before it existed). */
  protocol: z.enum(["imap", "pop3", "graph"]).optional(),
  /** The mailbox's check interval, so readers can tell a stalled mailbox (see `isStalled`). */
  checkIntervalSeconds: z.number().int().positive().optional(),
  /** When the current owner started working on the mailbox. */
  startedAt: isoTime.optional(),
  /** Messages published since the current owner started. */
  published: z.number().int().nonnegative().optional(),
});
export type MailboxStatus = z.infer<typeof MailboxStatus>;

/** What the credential is for; "graph" asks for a Microsoft Graph token (reading and sending). */
export const CredentialPurpose = z.enum(["imap", "pop3", "smtp", "graph"]);
export type CredentialPurpose = z.infer<typeof CredentialPurpose>;

export const CredentialRequest = z.object({
  version: v1,
  purpose: CredentialPurpose,
  /** Set when the caller's server refused the previous credential: forces one fresh token. */
  rejected: z.boolean().default(false),
  /**
   * The mailbox the requester means; token-service refuses a request whose subject names another.
   * Optional so that requesters of an earlier release are still answered.
   */
  tenant: id.optional(),
  mailbox: id.optional(),
  /**
   * The requester's public key (NaCl box, 32 bytes, base64): token-service seals the reply to it,
   * so only the requesting process can read the credential. token-service answers a request
   * without one with an error, never with a secret.
   */
  replyKey: z.string().regex(/^[A-Za-z0-9+/]{43}=$/).optional(),
});
export type CredentialRequest = z.infer<typeof CredentialRequest>;

/**
 * A reply sealed to the requester's `replyKey`: `box` is the JSON of a `CredentialReply`,
 * encrypted and authenticated with NaCl box from a key pair token-service makes for this one reply
 * (`key`, its public half) and `nonce`. All base64.
 */
export const SealedReply = z.object({
  version: v1,
  sealed: z.object({ key: z.string(), nonce: z.string(), box: z.string() }),
});
export type SealedReply = z.infer<typeof SealedReply>;

export const Credential = z.discriminatedUnion("mechanism", [
  z.object({ version: v1, mechanism: z.literal("PLAIN"), username: z.string(), password: z.string() }),
  z.object({
    version: v1,
    mechanism: z.literal("XOAUTH2"),
    username: z.string(),
    accessToken: z.string(),
    expiresAt: isoTime,
  }),
]);
export type Credential = z.infer<typeof Credential>;

export const CredentialError = z.object({
  version: v1,
  error: z.object({
    kind: z.enum(["transient", "needs-admin", "unknown-mailbox"]),
    message: z.string(),
    code: z.string().nullable(),
    fix: z.string().nullable(),
  }),
});
export type CredentialError = z.infer<typeof CredentialError>;

export const CredentialReply = z.union([Credential, CredentialError]);
export type CredentialReply = z.infer<typeof CredentialReply>;

/**
 * `postroom auth sign-in` → token-service: start a delegated sign-in. token-service runs the flow
 * itself, so the refresh token never leaves it. Device code (Microsoft, the default): the CLI only
 * shows the code and waits for the mailbox's auth state (`signIn` in `MailboxAuthStatus`).
 * Browser (Google, or Microsoft with `--browser`): an authorization code with PKCE, redirected to
 * `redirectUri`, a loopback address the CLI listens on; the CLI hands the code back in a
 * `SignInCode` and token-service, which alone holds the PKCE verifier, redeems it.
 */
export const SignInRequest = z.object({
  version: v1,
  tenant: id,
  mailbox: id,
  flow: z.enum(["device-code", "browser"]).optional(),
  redirectUri: z.string().max(200).optional(),
});
export type SignInRequest = z.infer<typeof SignInRequest>;

/** The CLI → token-service, on the same subject: what the browser brought back to the loopback address. */
export const SignInCode = z.object({
  version: v1,
  tenant: id,
  mailbox: id,
  signInId: z.string(),
  state: z.string().max(500),
  code: z.string().max(4000),
});
export type SignInCode = z.infer<typeof SignInCode>;

/** token-service's answer: what the person signing in must do (nothing secret: the code is for them to type). */
export const SignInStarted = z.object({
  version: v1,
  /** Matches `MailboxAuthStatus.signIn.id` once the flow ends. */
  signInId: z.string(),
  verificationUri: z.string(),
  userCode: z.string(),
  /** The identity platform's own instruction line. */
  message: z.string(),
  expiresAt: isoTime,
});
export type SignInStarted = z.infer<typeof SignInStarted>;

/** token-service's answer to a browser sign-in: the address to open (it carries only the PKCE challenge and state). */
export const SignInBrowserStarted = z.object({
  version: v1,
  signInId: z.string(),
  authorizationUrl: z.string(),
  expiresAt: isoTime,
});
export type SignInBrowserStarted = z.infer<typeof SignInBrowserStarted>;

/** token-service's answer to a `SignInCode`: the grant is sealed in its store. */
export const SignInCompleted = z.object({
  version: v1,
  signInId: z.string(),
  account: z.string(),
});
export type SignInCompleted = z.infer<typeof SignInCompleted>;

export const SignInReply = z.union([SignInStarted, SignInBrowserStarted, SignInCompleted, CredentialError]);
export type SignInReply = z.infer<typeof SignInReply>;
