import { z } from "zod";
import { semanticIssues } from "./check.js";

/**
 * The operator's configuration file, as a zod schema. Every field has a description: it becomes
 * the JSON Schema's documentation (editor completion) and the hint in error messages.
 *
 * Secret values are never written inline in examples: a secret field holds a reference,
 * `env:NAME` or `file:/path`, resolved only by the process that needs it (token-service).
 */

/** Tenant, mailbox and agent ids: safe in NATS subjects, metric labels and file paths. */
export const ID_PATTERN = /^[a-z0-9][a-z0-9_-]{0,63}$/;

const id = z
  .string()
  .regex(ID_PATTERN, {
    message: 'must be 1-64 lowercase letters, digits, "-" or "_", starting with a letter or digit (it is used in NATS subjects)',
  });

/** A secret: `env:NAME`, `file:/path`, or (discouraged, flagged by `config check`) a literal. */
export const SecretRef = z
  .string()
  .min(1, { message: "is empty: give a reference such as env:MAILBOX_PASSWORD or file:/run/secrets/mailbox" })
  .describe("A secret reference: env:NAME (environment variable) or file:/path (file contents).");
export type SecretRef = z.infer<typeof SecretRef>;

const port = z
  .number({ message: "must be a port number" })
  .int({ message: "must be a whole port number" })
  .min(1, { message: "must be a port number between 1 and 65535" })
  .max(65535, { message: "must be a port number between 1 and 65535" });
const hostname = z.string().min(1).describe("Host name or IP address.");

export const TlsMode = z
  .enum(["implicit", "starttls", "none"])
  .describe("implicit: TLS from the first byte (993, 995, 465); starttls: upgrade (143, 110, 587); none: plain text (tests only).");

export const PasswordAuth = z
  .object({
    type: z.literal("password"),
    username: z.string().min(1).optional().describe("Login name; defaults to the mailbox address."),
    password: SecretRef.describe("The password or app password (Gmail, Outlook.com): env:NAME or file:/path."),
  })
  .strict();

export const MicrosoftCloud = z
  .enum(["global", "usgov", "china"])
  .describe("global: login.microsoftonline.com; usgov: GCC High (login.microsoftonline.us); china: 21Vianet.");

export const Microsoft365Auth = z
  .object({
    type: z.literal("microsoft365"),
    tenantId: z
      .string()
      .min(1)
      .describe("The Directory (tenant) ID GUID or a verified domain; not 'common' or 'consumers'."),
    // z.guid rather than z.uuid: Entra ID GUIDs are not promised to carry RFC 9562 version bits.
    clientId: z
      .guid({ message: "must be the Application (client) ID, a GUID such as 061851f7-08c0-40bf-99c1-ebd489c11f16" })
      .describe("The app registration's Application (client) ID."),
    clientSecret: SecretRef.optional().describe(
      "The client secret's Value (not its Secret ID), as env:NAME or file:/path. Give this or certificate.",
    ),
    clientSecretExpires: z.iso.date().optional().describe("Expiry date of the client secret, to warn ahead of it."),
    certificate: z
      .object({
        certificate: SecretRef.describe("PEM certificate uploaded to the app registration."),
        privateKey: SecretRef.describe("PEM private key of that certificate."),
      })
      .strict()
      .optional()
      .describe("Certificate credentials, instead of clientSecret."),
    cloud: MicrosoftCloud.default("global"),
    authorityHost: z.url().optional().describe("Override of the token host (tests, proxies)."),
  })
  .strict();

export const GoogleServiceAccountAuth = z
  .object({
    type: z.literal("google-service-account"),
    keyFile: SecretRef.describe("The service account's JSON key: file:/path or env:NAME."),
    tokenUrl: z.url().optional().describe("Override of https://oauth2.googleapis.com/token (tests)."),
  })
  .strict();

export const MailboxAuth = z.discriminatedUnion("type", [PasswordAuth, Microsoft365Auth, GoogleServiceAccountAuth]);
export type MailboxAuth = z.infer<typeof MailboxAuth>;

export const AfterImport = z
  .object({
    action: z.enum(["mark-seen", "move", "delete", "none"]).default("mark-seen"),
    folder: z.string().min(1).optional().describe("Target folder for action: move."),
  })
  .strict()
  .refine((a) => a.action !== "move" || a.folder !== undefined, {
    message: 'action "move" needs a target folder',
    path: ["folder"],
    params: { fix: "add folder: Processed (an existing IMAP folder), or choose action: mark-seen" },
  });

export const Inbound = z
  .object({
    protocol: z.enum(["imap", "pop3"]),
    host: hostname,
    port: port.optional().describe("Defaults: imap 993/143, pop3 995/110 by TLS mode."),
    tls: TlsMode.default("implicit"),
    verifyCertificate: z.boolean().default(true).describe("Verify the server's TLS certificate. Turn off only for tests."),
    folder: z.string().min(1).default("INBOX").describe("IMAP folder to read (POP3 has only the inbox)."),
    afterImport: AfterImport.default({ action: "mark-seen" }),
    checkIntervalSeconds: z.number().int().min(1).max(3600).default(60),
    firstStart: z
      .enum(["from-now", "import-history"])
      .default("from-now")
      .describe("from-now: start at new mail; import-history: archive existing mail without offering it."),
    maxMessageBytes: z.number().int().positive().default(50 * 1024 * 1024),
    pop3LeaveOnServer: z.boolean().default(true).describe("POP3: never delete (remember UIDLs); false deletes after archiving."),
  })
  .strict();
export type Inbound = z.infer<typeof Inbound>;

export const Smtp = z
  .object({
    host: hostname,
    port: port.optional().describe("Defaults: 465 for implicit TLS, 587 for STARTTLS, 25 for none."),
    tls: TlsMode.default("starttls"),
    verifyCertificate: z.boolean().default(true),
    auth: MailboxAuth.optional().describe("Defaults to the mailbox's auth."),
    maxMessageBytes: z.number().int().positive().default(25 * 1024 * 1024),
    ratePerMinute: z.number().int().positive().default(30).describe("Exchange Online allows 30 messages a minute."),
  })
  .strict();
export type Smtp = z.infer<typeof Smtp>;

const match = z.union([
  z.object({ exact: z.string() }).strict(),
  z.object({ domain: z.string() }).strict(),
  z.object({ wildcard: z.string() }).strict(),
  z.object({ regex: z.string() }).strict(),
]);

export const RoutingRule = z
  .object({
    name: z.string().optional(),
    from: match.optional(),
    to: match.optional(),
    cc: match.optional(),
    subject: match.optional(),
    kind: z.enum(["auto-reply", "bounce", "loop"]).optional().describe("Match automatic mail."),
    queue: z.string().min(1).optional(),
    offer: z.boolean().default(true).describe("false: archive only, do not offer to agents."),
  })
  .strict();

export const Routing = z
  .object({
    defaultQueue: z.string().min(1).default("email"),
    rules: z.array(RoutingRule).default([]),
    offerAutomatic: z.boolean().default(false).describe("Offer auto-replies, bounces and loops to agents."),
  })
  .strict();

const archiveFields = {
  path: z.string().min(1).describe("Folder holding the archived .eml files and attachments."),
  quotaGb: z.number().positive().optional().describe("Disk allowance in GB (Softdial EmailDiskSpace)."),
  warnPercentLeft: z
    .number()
    .min(0)
    .max(100)
    .describe("Warn when this percentage of the quota is left (Softdial DiskSpaceWarningLimit)."),
  alertRecipients: z.array(z.email()).describe("Who receives disk-space alerts (Softdial EmailAlert)."),
  sendAlerts: z.boolean().describe("E-mail the recipients when a threshold is crossed (Softdial SendEmailAlert)."),
  retentionDays: z.number().int().positive().optional().describe("Purge files older than this (rows are kept)."),
};

export const ArchiveSettings = z
  .object({
    ...archiveFields,
    warnPercentLeft: archiveFields.warnPercentLeft.default(20),
    alertRecipients: archiveFields.alertRecipients.default([]),
    sendAlerts: archiveFields.sendAlerts.default(false),
  })
  .strict();
/**
 * A mailbox's overrides of the top-level archive settings. Built without defaults on purpose:
 * `ArchiveSettings.partial()` keeps zod's defaults, so `archive: { path: X }` came out with
 * warnPercentLeft 20, sendAlerts false and no recipients, silently overriding the top level.
 */
export const ArchiveOverrides = z
  .object({
    path: archiveFields.path.optional(),
    quotaGb: archiveFields.quotaGb,
    warnPercentLeft: archiveFields.warnPercentLeft.optional(),
    alertRecipients: archiveFields.alertRecipients.optional(),
    sendAlerts: archiveFields.sendAlerts.optional(),
    retentionDays: archiveFields.retentionDays,
  })
  .strict();
export type ArchiveOverrides = z.infer<typeof ArchiveOverrides>;
export type ArchiveSettings = z.infer<typeof ArchiveSettings>;

export const Mailbox = z
  .object({
    id: id.describe("Stable id, used in subjects, metrics and the archive layout."),
    name: z.string().optional().describe("Campaign name shown to people."),
    address: z.email({ message: "must be the mailbox's e-mail address, e.g. support@example.com" }),
    displayName: z.string().optional(),
    inbound: Inbound,
    auth: MailboxAuth,
    smtp: Smtp.optional().describe("Outgoing server for replies; without it agents cannot answer."),
    defaultCc: z.array(z.email()).default([]),
    defaultBcc: z.array(z.email()).default([]),
    agentsMayAnswer: z.boolean().default(true),
    agentsMayForward: z.boolean().default(true),
    offerPauseSeconds: z
      .number()
      .min(0)
      .default(0)
      .describe("Pause between new sessions to the ACD (Softdial SleepBeforeSendNewIc)."),
    routing: Routing.default({ defaultQueue: "email", rules: [], offerAutomatic: false }),
    archive: ArchiveOverrides.optional().describe("Overrides of the top-level archive settings; unset fields inherit them."),
  })
  .strict();
export type Mailbox = z.infer<typeof Mailbox>;

export const Acd = z.discriminatedUnion("type", [
  z.object({ type: z.literal("builtin") }).strict(),
  z
    .object({
      type: z.literal("softdial"),
      host: hostname.describe("The CallGem controller (Softdial ControllerIp)."),
      port: port.default(6502),
      switchId: z.string().min(1).default("postroom"),
    })
    .strict(),
  z
    .object({
      type: z.literal("webhook"),
      url: z.url(),
      signingSecret: SecretRef,
    })
    .strict(),
]);
export type Acd = z.infer<typeof Acd>;

export const Agent = z
  .object({
    id,
    name: z.string().optional(),
    password: SecretRef.describe("The agent's password or token for the agent API."),
    queues: z.array(z.string()).default([]),
    maxSessions: z.number().int().positive().default(3),
    supervisor: z.boolean().default(false).describe("May see the supervisor view of the tenant's queues."),
  })
  .strict();

/** A queue of the built-in distributor: how long a session may wait and where it goes then. */
export const Queue = z
  .object({
    id: z.string().min(1).describe("The queue's name, as routing rules and agents' queues spell it."),
    timeoutSeconds: z
      .number()
      .int()
      .positive()
      .optional()
      .describe("After waiting this long without an agent, a session moves to the overflow queue (if one is set)."),
    overflow: z.string().min(1).optional().describe("The queue a session moves to after timeoutSeconds."),
  })
  .strict();
export type Queue = z.infer<typeof Queue>;

export const Tenant = z
  .object({
    id: id.describe("Stable tenant id, used in subjects and the archive layout."),
    name: z.string().optional(),
    acd: Acd.default({ type: "builtin" }),
    agents: z.array(Agent).default([]),
    queues: z
      .array(Queue)
      .default([])
      .describe("Built-in distributor queue settings; a queue named by a rule or an agent but not listed here has no timeout."),
    reservationSeconds: z
      .number()
      .int()
      .positive()
      .default(60)
      .describe("Built-in distributor: an agent who does not accept an offered session within this time loses it to another agent."),
    mailboxes: z.array(Mailbox).min(1, { message: "a tenant needs at least one mailbox" }),
  })
  .strict();
export type Tenant = z.infer<typeof Tenant>;

export const PostroomConfig = z
  .object({
    version: z.literal(1).describe("Configuration format version."),
    nats: z
      .object({
        url: z.string().default("nats://127.0.0.1:4222").describe("NATS server(s), comma-separated; NATS_URL overrides."),
        namespace: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,63}$/).default("postroom"),
        replicas: z.number().int().min(1).max(5).default(1),
      })
      .strict()
      .default({ url: "nats://127.0.0.1:4222", namespace: "postroom", replicas: 1 }),
    database: z
      .object({
        url: z.string().min(1).describe("PostgreSQL URL (postgres://user@host:5432/db) or env:NAME; DATABASE_URL overrides."),
      })
      .strict(),
    archive: ArchiveSettings,
    logs: z
      .object({
        path: z.string().optional().describe("Folder for protocol transcripts and log files."),
        level: z.enum(["trace", "debug", "info", "warn", "error"]).default("info"),
      })
      .strict()
      .default({ level: "info" }),
    tenants: z.array(Tenant).min(1, { message: "add at least one tenant with one mailbox" }),
    agentApi: z
      .object({
        host: z.string().min(1).default("127.0.0.1").describe("Address the agent API and desktop listen on."),
        port: z.number().int().min(0).max(65535).default(8480).describe("Port of the agent API and desktop (0: any free port)."),
        publicUrl: z.url().optional().describe("How an ACD reaches the agent API (webhook links to the email); defaults to http://host:port."),
      })
      .strict()
      .default({ host: "127.0.0.1", port: 8480 })
      .describe("asd-bridge's HTTP API for agents, supervisors and ACD callbacks."),
  })
  .strict()
  // Checks that need more than one field (duplicate ids, credentials that must come in pairs).
  // They run only when the shape is valid; parseConfig runs the same checks over the raw input
  // as well, so that an operator sees them alongside shape errors instead of one round later.
  .superRefine((config, ctx) => {
    for (const issue of semanticIssues(config)) {
      if (issue.severity === "warning") continue;
      ctx.addIssue({ code: "custom", message: issue.message, path: issue.pathSegments, params: { fix: issue.fix } });
    }
  });
export type PostroomConfig = z.infer<typeof PostroomConfig>;
/** What an operator writes, before defaults are applied. */
export type PostroomConfigInput = z.input<typeof PostroomConfig>;
