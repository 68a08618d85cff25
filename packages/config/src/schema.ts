import { z } from "zod";
import { semanticIssues } from "./check.js";
import { GRAPH_DELEGATED_SCOPES, GRAPH_ENDPOINTS, MICROSOFT_DELEGATED_SCOPES, PROVIDER_NAMES, PROVIDER_PRESETS, presetPort, type ProviderName } from "./providers.js";

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

/**
 * Delegated Microsoft OAuth: a person signs in once (`postroom auth sign-in`, device code) and
 * token-service keeps the refresh token, encrypted. The only way into Outlook.com mailboxes, and
 * an alternative to app-only for work mailboxes.
 */
export const MicrosoftDelegatedAuth = z
  .object({
    type: z.literal("microsoft-delegated"),
    clientId: z
      .guid({ message: "must be the Application (client) ID, a GUID such as 061851f7-08c0-40bf-99c1-ebd489c11f16" })
      .describe("A public client app registration (Authentication → Allow public client flows: Yes); no secret."),
    tenant: z
      .string()
      .min(1)
      .optional()
      .describe("consumers (Outlook.com), organizations (any work account), or the tenant id; default: the provider's (outlook-com: consumers), else organizations."),
    scopes: z
      .array(z.string().min(1))
      .min(1)
      .optional()
      .describe("Default: the provider's, else IMAP.AccessAsUser.All, POP.AccessAsUser.All and SMTP.Send on https://outlook.office.com, with offline_access."),
    cloud: MicrosoftCloud.default("global"),
    authorityHost: z.url().optional().describe("Override of the sign-in host (tests, proxies)."),
  })
  .strict();

/** Gmail's one scope for IMAP, POP3 and SMTP. */
export const GOOGLE_MAIL_SCOPE = "https://mail.google.com/";

/**
 * Delegated Google OAuth: the mailbox's owner signs in once in a browser (`postroom auth sign-in`,
 * authorization code with PKCE and a loopback redirect: Google's device flow does not grant the
 * Gmail scope) and token-service keeps the refresh token, encrypted. For Gmail accounts without
 * app passwords, and Workspace mailboxes where no service account is allowed.
 */
export const GoogleDelegatedAuth = z
  .object({
    type: z.literal("google-delegated"),
    clientId: z
      .string()
      .regex(/^[\w.-]+\.apps\.googleusercontent\.com$/, { message: "must be an OAuth client id ending in .apps.googleusercontent.com" })
      .describe("An OAuth client of type Desktop app (Google Cloud console → APIs & Services → Credentials)."),
    clientSecret: SecretRef.describe(
      "That client's secret, as env:NAME or file:/path. Google gives desktop clients one; only token-service reads it.",
    ),
    scopes: z.array(z.string().min(1)).min(1).default([GOOGLE_MAIL_SCOPE]).describe("Default: https://mail.google.com/ (IMAP, POP3 and SMTP)."),
    authorizeUrl: z.url().optional().describe("Override of https://accounts.google.com/o/oauth2/v2/auth (tests)."),
    tokenUrl: z.url().optional().describe("Override of https://oauth2.googleapis.com/token (tests)."),
  })
  .strict();

export const MailboxAuth = z.discriminatedUnion("type", [PasswordAuth, Microsoft365Auth, GoogleServiceAccountAuth, MicrosoftDelegatedAuth, GoogleDelegatedAuth]);
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

export const Provider = z
  .enum(PROVIDER_NAMES)
  .describe(
    "Fills inbound and smtp host, port and TLS, the delegated OAuth tenant and scopes, and checks the auth type: outlook-com (Outlook.com/Hotmail/Live), office365 (Exchange Online), gmail, google-workspace.",
  );

/** The inbound server as written: protocol and host may be left to the mailbox's provider. */
export const Inbound = z
  .object({
    protocol: z
      .enum(["imap", "pop3", "graph"])
      .optional()
      .describe("imap, pop3 or graph (Microsoft Graph, for Exchange Online mailboxes with IMAP turned off); with a provider, defaults to imap."),
    host: hostname.optional().describe("Host name or IP address; with a provider, the provider's server. Not used with graph (see the mailbox's graph settings)."),
    port: port.optional().describe("Defaults: the provider's port, else imap 993/143, pop3 995/110 by TLS mode."),
    tls: TlsMode.default("implicit"),
    verifyCertificate: z.boolean().default(true).describe("Verify the server's TLS certificate. Turn off only for tests."),
    folder: z
      .string()
      .min(1)
      .default("INBOX")
      .describe("IMAP folder to read (POP3 has only the inbox). Graph: a well-known folder name (inbox, archive, ...) or a folder id; INBOX means inbox."),
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
/** The inbound server of a loaded mailbox: protocol and host always known. */
export type Inbound = Omit<z.infer<typeof Inbound>, "protocol" | "host"> & { protocol: "imap" | "pop3" | "graph"; host: string };

/** A mailbox's Microsoft Graph settings, for `inbound.protocol: graph` and `outbound: graph`. */
export const GraphSettings = z
  .object({
    url: z.url().optional().describe("Override of the cloud's Graph endpoint (https://graph.microsoft.com for global): tests, proxies."),
    user: z.string().min(1).optional().describe("The mailbox's user principal name or object id in Graph; default: the mailbox address."),
    saveToSentItems: z.boolean().default(true).describe("outbound: graph: keep a copy of each sent reply in the mailbox's Sent Items."),
    pageSize: z.number().int().min(1).max(1000).default(50).describe("Messages asked for per delta page (Prefer: odata.maxpagesize)."),
  })
  .strict();
export type GraphSettings = z.infer<typeof GraphSettings>;

/** The outgoing server as written: host may be left to the mailbox's provider. */
export const Smtp = z
  .object({
    host: hostname.optional().describe("Host name or IP address; with a provider, the provider's SMTP server."),
    port: port.optional().describe("Defaults: the provider's port, else 465 for implicit TLS, 587 for STARTTLS, 25 for none."),
    tls: TlsMode.default("starttls"),
    verifyCertificate: z.boolean().default(true),
    auth: MailboxAuth.optional().describe("Defaults to the mailbox's auth."),
    maxMessageBytes: z.number().int().positive().default(25 * 1024 * 1024),
    ratePerMinute: z.number().int().positive().default(30).describe("Exchange Online allows 30 messages a minute."),
    recipientsPerMinute: z
      .number()
      .int()
      .positive()
      .default(100)
      .describe("Recipients a minute across this mailbox's messages (To, Cc, Bcc, defaultCc and defaultBcc), beside ratePerMinute: a forward to 50 counts 50."),
    maxRecipients: z
      .number()
      .int()
      .positive()
      .max(1000)
      .default(50)
      .describe("Most recipients of one message (To, Cc, Bcc, defaultCc and defaultBcc together); the agent API and smtp-sender refuse more."),
  })
  .strict();
/** The outgoing server of a loaded mailbox: host always known. */
export type Smtp = Omit<z.infer<typeof Smtp>, "host"> & { host: string };

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
    kind: z
      .enum(["human", "auto-reply", "bounce", "bulk", "loop"])
      .optional()
      .describe("Match the archiver's classification. A rule without kind never offers mail its tenant's classification actions archive."),
    queue: z.string().min(1).optional(),
    offer: z.boolean().default(true).describe("false: archive only, do not offer to agents."),
  })
  .strict();

export const Routing = z
  .object({
    defaultQueue: z.string().min(1).default("email"),
    rules: z.array(RoutingRule).default([]),
    offerAutomatic: z
      .boolean()
      .default(false)
      .describe("Offer auto-replies, bounces and loops to agents (with their flag) even where the tenant's classification actions say archive."),
  })
  .strict();

const archiveFields = {
  path: z.string().min(1).describe("Folder holding the archived .eml files and attachments."),
  quotaGb: z
    .number()
    .positive()
    .optional()
    .describe("Disk allowance in GiB (1 GiB = 1024³ bytes; Softdial EmailDiskSpace). Changed on SIGHUP without a restart."),
  minFreeBytes: z
    .number()
    .int()
    .min(0)
    .optional()
    .describe(
      "Free space always left on the archive's filesystem, in bytes (default 536870912 = 512 MiB): a message that would leave less is refused and ingestion pauses. Lower it for a small archive volume.",
    ),
  warnPercentLeft: z
    .number()
    .min(0)
    .max(100)
    .describe("Warn when this percentage of the quota is left (Softdial DiskSpaceWarningLimit)."),
  alertRecipients: z.array(z.email()).describe("Who receives disk-space alerts (Softdial EmailAlert)."),
  sendAlerts: z.boolean().describe("E-mail the recipients when a threshold is crossed (Softdial SendEmailAlert)."),
  retentionDays: z.number().int().positive().optional().describe("Purge files older than this (rows are kept)."),
};

/** A client's TLS settings, the same for NATS and PostgreSQL. */
const TlsClient = z
  .object({
    ca: z.string().optional().describe("PEM file of the CA that signed the server's certificate (default: the system's CAs)."),
    cert: z.string().optional().describe("Client certificate (PEM file), when the server verifies clients."),
    key: z.string().optional().describe("The client certificate's private key (PEM file)."),
    verify: z.boolean().default(true).describe("Verify the server's certificate and name; false only for a throwaway test server."),
  })
  .strict();

export const ArchiveSettings = z
  .object({
    ...archiveFields,
    warnPercentLeft: archiveFields.warnPercentLeft.default(20),
    minFreeBytes: archiveFields.minFreeBytes.default(512 * 1024 * 1024),
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
    minFreeBytes: archiveFields.minFreeBytes,
    warnPercentLeft: archiveFields.warnPercentLeft.optional(),
    alertRecipients: archiveFields.alertRecipients.optional(),
    sendAlerts: archiveFields.sendAlerts.optional(),
    retentionDays: archiveFields.retentionDays,
  })
  .strict();
export type ArchiveOverrides = z.infer<typeof ArchiveOverrides>;
export type ArchiveSettings = z.infer<typeof ArchiveSettings>;

const MailboxFields = z
  .object({
    id: id.describe("Stable id, used in subjects, metrics and the archive layout."),
    provider: Provider.optional(),
    name: z.string().optional().describe("Campaign name shown to people."),
    address: z.email({ message: "must be the mailbox's e-mail address, e.g. support@example.com" }),
    displayName: z.string().optional(),
    aliases: z
      .array(z.email({ message: "must be an e-mail address, e.g. help@example.com" }))
      .default([])
      .describe("The mailbox's other addresses (aliases, former names): mail from them, or with them in Sender/Return-Path/Reply-To, is the mailbox's own — a loop."),
    inbound: Inbound.prefault({}).describe("Where mail is read; with a provider it may be left out (IMAP on the provider's server)."),
    auth: MailboxAuth,
    smtp: Smtp.optional().describe("Outgoing server for replies; without it agents cannot answer. With a provider, defaults to the provider's SMTP server."),
    outbound: z
      .enum(["smtp", "graph"])
      .default("smtp")
      .describe("How replies are sent: smtp (the smtp settings), or graph (Microsoft Graph sendMail; smtp's rate and recipient limits still apply)."),
    graph: GraphSettings.prefault({}).describe("Microsoft Graph settings, used with inbound.protocol: graph and outbound: graph."),
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

/** A loaded mailbox: its provider's preset applied, so inbound and smtp hosts are always known. */
export type Mailbox = Omit<z.infer<typeof MailboxFields>, "inbound" | "smtp"> & { inbound: Inbound; smtp?: Smtp };

/**
 * A mailbox, with its provider's preset filled in where the operator left a field out. The fields
 * an operator writes always win; the preset's port is used only with the preset's TLS mode (an
 * explicit `tls: starttls` on a provider whose IMAP is implicit falls back to the protocol's port).
 * The auth check is an error, not a warning: the wrong auth type cannot log in at that provider.
 */
export const Mailbox = MailboxFields.transform((m, ctx): Mailbox => {
  const preset = m.provider === undefined ? undefined : PROVIDER_PRESETS[m.provider];
  const fix = `add it, or set provider: ${PROVIDER_NAMES.join(" | ")}`;
  const protocol = m.inbound.protocol ?? (preset ? "imap" : undefined);
  if (protocol === undefined) ctx.addIssue({ code: "custom", message: "is missing", path: ["inbound", "protocol"], params: { fix: `add protocol: imap (or pop3), or set provider: ${PROVIDER_NAMES.join(" | ")}` }, input: m.inbound });
  const endpoint = preset && protocol && protocol !== "graph" ? preset[protocol] : undefined;
  const usesGraph = protocol === "graph" || m.outbound === "graph";
  const host = m.inbound.host ?? endpoint?.host ?? (protocol === "graph" ? graphHost(m) : undefined);
  if (usesGraph && m.auth.type !== "microsoft365" && m.auth.type !== "microsoft-delegated") {
    ctx.addIssue({ code: "custom", message: `Microsoft Graph needs a Microsoft sign-in, not auth type "${m.auth.type}"`, path: ["auth", "type"], params: { fix: "use auth type microsoft365 (app-only, with the Mail.ReadWrite and Mail.Send application permissions) or microsoft-delegated" }, input: m.auth });
  }
  if (m.auth.type === "microsoft-delegated" && usesGraph && (protocol !== "graph" || m.outbound !== "graph") && m.smtp?.auth === undefined) {
    ctx.addIssue({ code: "custom", message: "a delegated sign-in gets tokens for one service: Graph here, IMAP/POP/SMTP there", path: protocol === "graph" ? ["outbound"] : ["inbound", "protocol"], params: { fix: "read and send through Graph (inbound.protocol: graph and outbound: graph), or through IMAP/POP and SMTP" }, input: m });
  }
  if (host === undefined) ctx.addIssue({ code: "custom", message: "is missing", path: ["inbound", "host"], params: { fix }, input: m.inbound });
  const port = m.inbound.port ?? (endpoint ? presetPort(endpoint, m.inbound.tls) : undefined);
  let smtp: Smtp | undefined;
  // outbound: graph keeps smtp's limits (rate, recipients, size) with Graph's host in place of a server.
  const smtpIn = m.smtp ?? (preset || m.outbound === "graph" ? Smtp.parse(m.outbound === "graph" ? { host: graphHost(m), tls: "implicit", port: 443 } : {}) : undefined);
  if (smtpIn !== undefined) {
    const smtpHost = smtpIn.host ?? preset?.smtp.host;
    if (smtpHost === undefined) ctx.addIssue({ code: "custom", message: "is missing", path: ["smtp", "host"], params: { fix }, input: m.smtp });
    const smtpPort = smtpIn.port ?? (preset && smtpIn.host === undefined ? presetPort(preset.smtp, smtpIn.tls) : undefined);
    smtp = { ...smtpIn, host: smtpHost ?? "", ...(smtpPort === undefined ? {} : { port: smtpPort }) };
  }
  if (preset && m.provider && !usesGraph) {
    for (const issue of providerAuthIssues(m.provider, m.auth.type, smtpIn?.auth?.type)) ctx.addIssue({ code: "custom", ...issue, input: m.auth });
  }
  const { smtp: _smtp, ...rest } = m;
  // Delegated sign-in: the tenant and scopes of the provider, else work accounts and Exchange's scopes.
  if (m.auth.type === "microsoft-delegated") {
    m.auth.tenant ??= preset?.delegated.tenant ?? "organizations";
    m.auth.scopes ??= [...(usesGraph ? graphDelegatedScopes(m.auth.cloud) : (preset?.delegated.scopes ?? MICROSOFT_DELEGATED_SCOPES))];
  }
  if (smtp?.auth?.type === "microsoft-delegated") {
    smtp.auth.tenant ??= preset?.delegated.tenant ?? "organizations";
    smtp.auth.scopes ??= [...(preset?.delegated.scopes ?? MICROSOFT_DELEGATED_SCOPES)];
  }
  return {
    ...rest,
    inbound: { ...m.inbound, protocol: protocol ?? "imap", host: host ?? "", ...(port === undefined ? {} : { port }) },
    ...(smtp === undefined ? {} : { smtp }),
  };
});

/** The Graph endpoint a mailbox uses: its graph.url, else its Microsoft cloud's. */
export function graphEndpoint(m: { graph?: { url?: string | undefined } | undefined; auth: { type: string; cloud?: string } }): string {
  const cloud = (m.auth.cloud ?? "global") as keyof typeof GRAPH_ENDPOINTS;
  return (m.graph?.url ?? GRAPH_ENDPOINTS[cloud] ?? GRAPH_ENDPOINTS.global).replace(/\/+$/, "");
}

function graphHost(m: Parameters<typeof graphEndpoint>[0]): string {
  return new URL(graphEndpoint(m)).hostname;
}

/** Delegated Graph scopes on a cloud's Graph resource. */
export function graphDelegatedScopes(cloud: string | undefined): string[] {
  const resource = GRAPH_ENDPOINTS[(cloud ?? "global") as keyof typeof GRAPH_ENDPOINTS] ?? GRAPH_ENDPOINTS.global;
  return GRAPH_DELEGATED_SCOPES.map((s) => s.replace(GRAPH_ENDPOINTS.global, resource));
}

/** Errors for auth types a provider cannot use (also run by `config check` over raw input). */
export function providerAuthIssues(provider: ProviderName, inboundType: unknown, smtpType: unknown): { message: string; path: string[]; params: { fix: string } }[] {
  const preset = PROVIDER_PRESETS[provider];
  const out: { message: string; path: string[]; params: { fix: string } }[] = [];
  if (typeof inboundType === "string" && !(preset.inboundAuth as readonly string[]).includes(inboundType)) {
    out.push({ message: `${preset.label} mailboxes cannot be read with auth type "${inboundType}" (allowed: ${preset.inboundAuth.join(", ")})`, path: ["auth", "type"], params: { fix: preset.authFix } });
  }
  // Without smtp.auth the mailbox's auth sends too, and must be one SMTP accepts.
  const sending = smtpType ?? inboundType;
  const path = smtpType === undefined ? ["auth", "type"] : ["smtp", "auth", "type"];
  if (typeof sending === "string" && !(preset.smtpAuth as readonly string[]).includes(sending) && !(smtpType === undefined && out.length > 0)) {
    out.push({ message: `${preset.label} cannot send with auth type "${sending}" (allowed: ${preset.smtpAuth.join(", ")})`, path, params: { fix: preset.authFix } });
  }
  return out;
}

/** What happens to a received message of one classification. */
export const ClassificationAction = z
  .enum(["offer", "flag", "archive"])
  .describe("offer: offer to agents; flag: offer, marked with its classification; archive: archive only, never offered.");
export type ClassificationAction = z.infer<typeof ClassificationAction>;

const loopBreakerDefaults = { maxMessages: 10, windowMinutes: 15 };
export const LoopBreaker = z
  .object({
    maxMessages: z.number().int().positive().default(loopBreakerDefaults.maxMessages).describe("Offer at most this many messages from one sender to one mailbox within windowMinutes."),
    windowMinutes: z.number().positive().default(loopBreakerDefaults.windowMinutes).describe("The window of the loop breaker, in minutes (fractions allowed)."),
  })
  .strict();
export type LoopBreaker = z.infer<typeof LoopBreaker>;

const classificationDefaults = { human: "offer", autoReply: "archive", bounce: "archive", bulk: "flag", loop: "archive", loopBreaker: loopBreakerDefaults } as const;
/**
 * Per tenant: what each of the archiver's verdicts does, and the rate-based loop breaker. Bulk
 * defaults to `flag`, not `archive`: a list post or a newsletter may still be a customer who
 * needs an answer (a person writing through a Google Group), and hiding people's mail is the
 * worse mistake; auto-replies, bounces and loops are kept from agents.
 */
export const ClassificationSettings = z
  .object({
    human: ClassificationAction.default(classificationDefaults.human),
    autoReply: ClassificationAction.default(classificationDefaults.autoReply),
    bounce: ClassificationAction.default(classificationDefaults.bounce),
    bulk: ClassificationAction.default(classificationDefaults.bulk),
    loop: ClassificationAction.default(classificationDefaults.loop),
    loopBreaker: LoopBreaker.default(loopBreakerDefaults).describe(
      "More than maxMessages from one sender to one mailbox within windowMinutes are archived, not offered, with one alert.",
    ),
  })
  .strict();
export type ClassificationSettings = z.infer<typeof ClassificationSettings>;

/** The action a tenant's settings give a verdict. */
export function classificationAction(settings: ClassificationSettings, classification: "human" | "auto-reply" | "bounce" | "bulk" | "loop"): ClassificationAction {
  return classification === "auto-reply" ? settings.autoReply : settings[classification];
}

export const Acd = z.discriminatedUnion("type", [
  z.object({ type: z.literal("builtin") }).strict(),
  z
    .object({
      type: z.literal("softdial"),
      host: hostname.describe("The CallGem controller (Softdial ControllerIp)."),
      port: port.default(6502).describe("CallGem's media-layer port: 6502 carries ASCII, 6500 UTF-16LE."),
      switchId: z.string().min(1).default("postroom"),
      encoding: z
        .enum(["ascii", "utf16le"])
        .optional()
        .describe(
          "Text encoding of the port: ascii (6502; non-ASCII text is tilde-escaped) or utf16le (6500, no BOM). Default: utf16le on port 6500, ascii otherwise.",
        ),
      causes: z
        .record(z.string().min(1), z.number().int().min(0).max(999))
        .default({})
        .describe(
          "ND cause (CA, 0-999) per agent outcome, over the defaults answered 1, forwarded 2, transferred 3, no-reply-needed 4, spam 5, closed 6, other 9, disconnected-by-acd 0, abandoned 0.",
        ),
      ackTimeoutSeconds: z
        .number()
        .positive()
        .default(10)
        .describe("A frame carrying TK that CallGem has not acknowledged with MV within this many seconds is reported as unacknowledged."),
    })
    .strict(),
  z
    .object({
      type: z.literal("webhook"),
      url: z.url(),
      signingSecret: SecretRef,
      concurrency: z
        .number()
        .int()
        .positive()
        .default(8)
        .describe("Offers POSTed at the same time, across sessions: one hung request holds back no other session."),
      retry: z
        .object({
          initialDelaySeconds: z.number().positive().default(1).describe("Wait before the first retry of an offer the ACD did not take."),
          maxDelaySeconds: z
            .number()
            .positive()
            .default(300)
            .describe("Longest wait between retries. Offers are retried for as long as the email is unanswered, never given up."),
          timeoutSeconds: z.number().positive().default(10).describe("How long one POST may take before it counts as failed and is retried."),
        })
        .strict()
        .default({ initialDelaySeconds: 1, maxDelaySeconds: 300, timeoutSeconds: 10 }),
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

/**
 * What happens to an email whose session the ACD ended without an agent handling it (a queue
 * timeout without overflow, an abandon, a refusal): it is never closed as completed.
 */
export const UnansweredPolicy = z
  .object({
    policy: z
      .enum(["requeue", "fallback", "close"])
      .default("requeue")
      .describe("requeue: offer it to the ACD again after requeueAfterSeconds; fallback: hand it to the built-in distributor's queue; close: end it (recorded as unanswered)."),
    requeueAfterSeconds: z.number().min(0).default(300).describe("requeue: how long after the ACD let it go the email is offered again."),
    fallbackQueue: z
      .string()
      .min(1)
      .optional()
      .describe("fallback: the built-in distributor's queue it goes to (default: the queue it was routed to). The tenant's agents serve it in the desktop."),
    alertAfterSeconds: z
      .number()
      .positive()
      .default(3600)
      .describe("Unanswered emails older than this raise an alert (metric postroom_asd_bridge_unanswered_oldest_age_seconds, status)."),
  })
  .strict();
export type UnansweredPolicy = z.infer<typeof UnansweredPolicy>;

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
    unanswered: UnansweredPolicy.default({ policy: "requeue", requeueAfterSeconds: 300, alertAfterSeconds: 3600 }).describe(
      "What happens to an email the ACD ends without an agent: it is recorded as unanswered, never as completed.",
    ),
    mailboxes: z.array(Mailbox).min(1, { message: "a tenant needs at least one mailbox" }),
    classification: ClassificationSettings.default(classificationDefaults).describe(
      "What the archiver's verdicts (human, auto-reply, bounce, bulk, loop) do with received mail, and the loop breaker.",
    ),
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
        users: z
          .partialRecord(
            z.enum(["token-service", "imap-poller", "archiver", "asd-bridge", "smtp-sender"]),
            z
              .object({
                user: z.string().min(1).describe("The service's NATS user (see the generated authorization block)."),
                password: z.string().min(1).describe("Its password: a reference (env:NAME, file:/path)."),
              })
              .strict(),
          )
          .optional()
          .describe("One NATS user per service, each with the least-privilege permissions generated from the contracts (deploy/README.md, \"NATS users\"); NATS_USER / NATS_PASSWORD override in a pod."),
        tls: TlsClient.optional().describe("TLS to NATS (a tls:// URL also turns it on)."),
      })
      .strict()
      .default({ url: "nats://127.0.0.1:4222", namespace: "postroom", replicas: 1 }),
    database: z
      .object({
        url: z.string().min(1).describe("PostgreSQL URL (postgres://user@host:5432/db) or env:NAME; DATABASE_URL overrides."),
        tls: TlsClient.optional().describe("TLS to PostgreSQL: every connection encrypted, the server verified."),
        users: z
          .partialRecord(
            z.enum(["archiver", "asd-bridge", "smtp-sender"]),
            z
              .object({
                user: z
                  .string()
                  .regex(/^[a-z_][a-z0-9_.-]{0,62}$/, { message: "a database user name of lowercase letters, digits, _ . - (e.g. postroom_archiver_login)" })
                  .optional()
                  .describe("The service's own login user, connecting to database.url's server and database."),
                password: z.string().min(1).optional().describe("Its password: a reference (env:NAME, file:/path)."),
                url: z.string().min(1).optional().describe("Instead of user/password: the service's whole connection URL, as a reference (env:NAME, file:/path)."),
              })
              .strict(),
          )
          .optional()
          .describe(
            "One PostgreSQL user per service, each with the rights of its own tables only (packages/db, \"roles\"). Set: the services apply no migration; `postroom up` (or the chart's db-setup Job) migrates as database.url's user and creates the roles. DATABASE_USER / DATABASE_PASSWORD override in a pod.",
          ),
        rolePrefix: z
          .string()
          .regex(/^[a-z_][a-z0-9_]{0,39}$/, { message: "lowercase letters, digits and _, starting with a letter or _" })
          .default("postroom_")
          .describe("Prefix of the services' group roles (postroom_archiver, postroom_asd_bridge, postroom_smtp_sender)."),
      })
      .strict(),
    archive: ArchiveSettings,
    tokenStore: z
      .object({
        key: SecretRef.describe("The key that wraps each stored refresh token's data key: 32 or more random bytes (e.g. openssl rand -base64 32), as env:NAME or file:/path."),
        previousKeys: z
          .array(SecretRef)
          .default([])
          .describe("Keys being rotated out: grants sealed with them are still read, and re-sealed with key at token-service's start."),
      })
      .strict()
      .optional()
      .describe("Where token-service keeps delegated OAuth grants: NATS KV, envelope-encrypted (AES-256-GCM). Required when a mailbox uses microsoft-delegated or google-delegated."),
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
        allowedHosts: z
          .array(z.string().min(1).regex(/^(?:[A-Za-z0-9._-]+|\[?[0-9A-Fa-f.]*:[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*\]?)$/, { message: "a host name or address without scheme, path or port, e.g. desk.example.com" }))
          .optional()
          .describe(
            "Host header values the API answers (names or addresses, no port); others get 421 (DNS rebinding). Default: the listen host, localhost, 127.0.0.1, ::1 and publicUrl's host; when listening on 0.0.0.0 or :: also any IP address.",
          ),
        trustedProxies: z
          .array(z.string().regex(/^[0-9a-fA-F.:]+(\/\d{1,3})?$/, { message: "an IP address or CIDR range, e.g. 10.0.0.0/8" }))
          .default([])
          .describe(
            "Reverse proxies (addresses or CIDR ranges) whose X-Forwarded-For names the client: login limits and the audit use its last address. Empty: the socket's peer, never the header.",
          ),
        login: z
          .object({
            freeAttempts: z.number().int().min(1).max(100).default(5).describe("Wrong passwords for one account before each next attempt must wait (1 s, doubling)."),
            lockAfter: z.number().int().min(1).max(1000).default(10).describe("Wrong passwords in a row for one account before it is locked for lockoutSeconds."),
            addressLockAfter: z.number().int().min(1).max(10000).default(50).describe("Wrong passwords from one client address (any account) before that address is locked for lockoutSeconds."),
            lockoutSeconds: z.number().int().min(1).max(86400).default(900).describe("How long a lockout lasts; a correct password is refused meanwhile. Failures older than this are forgotten."),
          })
          .strict()
          .default({ freeAttempts: 5, lockAfter: 10, addressLockAfter: 50, lockoutSeconds: 900 })
          .describe("Login backoff and lockout, per account (tenant + agent) and per client address."),
      })
      .strict()
      .default({ host: "127.0.0.1", port: 8480, trustedProxies: [], login: { freeAttempts: 5, lockAfter: 10, addressLockAfter: 50, lockoutSeconds: 900 } })
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
