import { Document, isMap, isSeq, type Node } from "yaml";
import { z } from "zod";
import { GUID_PATTERN } from "../check.js";
import { validateConfig } from "../load.js";
import { EXCHANGE_BASIC_SMTP_END, isExchangeOnlineHost } from "../providers.js";
import type { PostroomConfigInput } from "../schema.js";
import { readCampaigns, SoftdialImportError, type RawCampaign } from "./xml.js";

export { SoftdialImportError };

/** Options of importSoftdial. */
export interface SoftdialImportOptions {
  /** File name of the secrets file written beside the YAML; named in the YAML's comments. */
  envFileName: string;
  /** Name of the imported file, for the YAML's header comment. */
  sourceName?: string;
  /** Where archives go on Linux; Softdial's Windows EmailInboxFolder cannot be used. */
  archiveRoot?: string;
  /** Where logs go on Linux; Softdial's Windows LogsPath cannot be used. */
  logsPath?: string;
}

/** The outcome of an import: the files to write and what the operator must read. */
export interface SoftdialImport {
  /** The Postroom configuration, with comments. Holds `env:NAME` references, never secret values. */
  yaml: string;
  /** Secret values by environment variable name, for the env file (see formatEnvFile). */
  env: Record<string, string>;
  /** Every decision the importer made that Softdial's file did not state. */
  assumptions: string[];
  /** Things the operator must check or fix: unmapped elements, placeholders, conflicts. */
  warnings: string[];
}

/** Every EmailConfig element the importer understands, in Sytel's documented order. */
export const SOFTDIAL_EMAIL_FIELDS = [
  "UseBasicAuth",
  "UseAzureBusinessAuth",
  "AzureBusinessAuthClientId",
  "AzureBusinessAuthTenantId",
  "AzureBusinessAuthSecret",
  "LogsPath",
  "SmtpServer",
  "SmtpPort",
  "ImapServer",
  "ImapPort",
  "PopServer",
  "PopPort",
  "EmailAccount",
  "AccountDomain",
  "EmailAccountPass",
  "CC",
  "BCC",
  "DataSourceName",
  "DataSourceUser",
  "DataSourcePass",
  "ControllerIp",
  "EmailDiskSpace",
  "DiskSpaceWarningLimit",
  "EmailAlert",
  "SendEmailAlert",
  "EmailInboxFolder",
  "EmailCheckInterval",
  "SleepBeforeSendNewIc",
  "AnswerEmails",
  "ForwardEmails",
] as const;
type Field = (typeof SOFTDIAL_EMAIL_FIELDS)[number];
const KNOWN = new Set<string>(SOFTDIAL_EMAIL_FIELDS);

/** The CallGem controller's port for the ACD protocol; Softdial's file carries only the host. */
const SOFTDIAL_ACD_PORT = 6502;
/** The controller's port that carries UTF-16LE instead of ASCII. */
const SOFTDIAL_UNICODE_PORT = 6500;
const DEFAULT_ARCHIVE_ROOT = "/var/lib/postroom/archive";
const DEFAULT_LOGS_PATH = "/var/log/postroom";

type ArchiveInput = NonNullable<PostroomConfigInput["archive"]>;
type MailboxInput = PostroomConfigInput["tenants"][number]["mailboxes"][number];
type TenantInput = PostroomConfigInput["tenants"][number];
type Comment = { path: (string | number)[]; text: string; trailing?: boolean };

/** A campaign with its EmailConfig values, trimmed except secrets. */
class CampaignValues {
  readonly label: string;
  constructor(
    readonly raw: RawCampaign,
    private readonly values: Map<string, string>,
  ) {
    this.label = `campaign "${raw.name ?? `#${raw.index + 1}`}"`;
  }
  /** A value, trimmed; undefined when absent or empty. */
  get(field: Field): string | undefined {
    const v = this.values.get(field)?.trim();
    return v === undefined || v === "" ? undefined : v;
  }
  /** A secret exactly as written (spaces can be part of a password); undefined when absent or empty. */
  secret(field: Field): string | undefined {
    const v = this.values.get(field);
    return v === undefined || v.trim() === "" ? undefined : v;
  }
}

/**
 * Converts a Softdial Workflow config.xml into a Postroom configuration. Campaigns of one tenantID
 * become mailboxes of one tenant. Secrets go to `env`, referenced from the YAML as `env:NAME`.
 * Throws SoftdialImportError (with line and column) when the XML, or a campaign's EmailConfig, is
 * malformed, or when there is no email campaign at all.
 */
export function importSoftdial(xmlText: string, options: SoftdialImportOptions): SoftdialImport {
  const assumptions: string[] = [];
  const warnings: string[] = [];
  const env: Record<string, string> = {};
  const comments: Comment[] = [];
  const archiveRoot = options.archiveRoot ?? DEFAULT_ARCHIVE_ROOT;

  const campaigns: CampaignValues[] = [];
  for (const raw of readCampaigns(xmlText)) {
    const label = `campaign "${raw.name ?? `#${raw.index + 1}`}"`;
    if (raw.emailConfig === null) {
      warnings.push(`${label} (className ${raw.className ?? "none"}) has no EmailConfig in its UserParams: skipped, it is not an email campaign`);
      continue;
    }
    for (const [key] of raw.emailConfig) {
      if (!KNOWN.has(key)) warnings.push(`${label}: <${key}> is not an EmailConfig element this importer knows; it was not imported — carry it over by hand if it matters`);
    }
    for (const key of raw.structured) warnings.push(`${label}: <${key}> holds nested elements, not a value; it was not imported`);
    campaigns.push(new CampaignValues(raw, new Map(raw.emailConfig)));
  }
  if (campaigns.length === 0) {
    throw new SoftdialImportError("no email campaign found: no <Campaign> element has an <EmailConfig> in its <UserParams>", undefined);
  }

  // Tenants: campaigns with the same tenantID attribute share one tenant.
  const byTenant = new Map<string, CampaignValues[]>();
  for (const c of campaigns) {
    let tenantID = c.raw.tenantID;
    if (tenantID === undefined || tenantID.trim() === "") {
      assumptions.push(`${c.label} has no tenantID attribute: it belongs to tenant "default"`);
      tenantID = "default";
    }
    byTenant.set(tenantID, [...(byTenant.get(tenantID) ?? []), c]);
  }

  const archivePaths = new ArchivePathMapper(archiveRoot, assumptions);
  const base = archiveFor(campaigns[0]!, archivePaths, warnings);
  const tenantIds = new Set<string>();
  const envNames = new Set<string>();
  const uniqueEnv = (name: string) => {
    let n = name;
    for (let i = 2; envNames.has(n); i++) n = `${name}_${i}`;
    envNames.add(n);
    return n;
  };
  const tenants: TenantInput[] = [];

  for (const [tenantID, members] of byTenant) {
    const tenantId = uniqueId(deriveId(tenantID, "default"), tenantIds);
    if (tenantId !== tenantID) assumptions.push(`tenantID "${tenantID}" → tenant id "${tenantId}" (ids are lowercase letters, digits, "-" and "_")`);
    const ti = tenants.length;
    const mailboxIds = new Set<string>();
    const mailboxes: MailboxInput[] = [];
    for (const c of members) {
      const mi = mailboxes.length;
      const fallback = `mailbox-${c.raw.index + 1}`;
      if (c.raw.name === undefined) warnings.push(`${c.label} has no name attribute: its mailbox id is "${fallback}"`);
      const mailboxId = uniqueId(deriveId(c.raw.name ?? fallback, fallback), mailboxIds);
      if (c.raw.name !== undefined && mailboxId !== c.raw.name) assumptions.push(`${c.label} → mailbox id "${mailboxId}"`);
      const envPrefix = `POSTROOM_${envToken(tenantId)}_${envToken(mailboxId)}`;
      const mailbox = mapMailbox(c, { mailboxId, envPrefix, uniqueEnv, env, assumptions, warnings });
      const archive = archiveFor(c, archivePaths, warnings);
      const override = differences(archive, base);
      if (Object.keys(override).length > 0) mailbox.archive = override;
      const sourcePath = c.get("EmailInboxFolder");
      if (override.path !== undefined && sourcePath !== undefined && sourcePath !== override.path) {
        comments.push({ path: ["tenants", ti, "mailboxes", mi, "archive", "path"], text: ` Softdial: ${sourcePath}`, trailing: true });
      }
      comments.push({
        path: ["tenants", ti, "mailboxes", mi],
        text: ` Softdial campaign "${c.raw.name ?? ""}" (tenantID ${tenantID}, className ${c.raw.className ?? "none"})`,
      });
      mailboxes.push(mailbox);
    }
    const tenant: TenantInput = { id: tenantId, name: tenantID, acd: acdFor(tenantId, members, assumptions, warnings), mailboxes };
    if (tenant.acd?.type === "softdial") {
      comments.push({ path: ["tenants", ti, "acd"], text: ` Softdial ControllerIp; ${SOFTDIAL_ACD_PORT} is the CallGem controller's ACD port` });
    }
    tenants.push(tenant);
  }

  const config: PostroomConfigInput = {
    version: 1,
    database: databaseFor(campaigns, env, uniqueEnv, assumptions, warnings, comments),
    archive: base,
    ...logsFor(campaigns, options.logsPath ?? DEFAULT_LOGS_PATH, assumptions, warnings, comments),
    tenants,
  };
  const firstPath = campaigns[0]!.get("EmailInboxFolder");
  if (firstPath !== undefined && firstPath !== base.path) comments.push({ path: ["archive", "path"], text: ` Softdial: ${firstPath}`, trailing: true });

  assumptions.push(
    "inbound mail is marked seen after it is archived (afterImport: mark-seen) and only mail arriving from now on is offered (firstStart: from-now); Softdial's file does not say what it did",
    "NATS is expected at nats://127.0.0.1:4222 (the default); set nats.url or NATS_URL otherwise",
  );

  const yaml = render(config, comments, options);
  const check = validateConfig(yaml);
  for (const e of check.errors) warnings.push(`the generated configuration needs a fix before use: ${e.path}: ${e.message}${e.fix ? ` — fix: ${e.fix}` : ""}`);
  return { yaml, env, assumptions, warnings };
}

interface MailboxContext {
  mailboxId: string;
  envPrefix: string;
  uniqueEnv: (name: string) => string;
  env: Record<string, string>;
  assumptions: string[];
  warnings: string[];
}

function mapMailbox(c: CampaignValues, ctx: MailboxContext): MailboxInput {
  const { assumptions, warnings } = ctx;
  const L = c.label;

  // Address: EmailAccount is the local part, AccountDomain the domain (Sytel's example).
  const account = c.get("EmailAccount");
  const domain = c.get("AccountDomain");
  let address: string;
  if (account?.includes("@")) {
    address = account;
    if (domain !== undefined && !account.toLowerCase().endsWith(`@${domain.toLowerCase()}`)) {
      assumptions.push(`${L}: EmailAccount "${account}" is already an address; AccountDomain "${domain}" was not appended`);
    }
  } else if (account !== undefined && domain !== undefined) {
    address = `${account}@${domain}`;
  } else {
    address = `${account ?? ctx.mailboxId}@example.invalid`;
    warnings.push(`${L}: EmailAccount or AccountDomain is empty; the address is the placeholder ${address} — replace it`);
  }
  if (!z.email().safeParse(address).success) warnings.push(`${L}: "${address}" (EmailAccount@AccountDomain) is not a valid address — correct it in the YAML`);

  const mailbox: MailboxInput = {
    id: ctx.mailboxId,
    name: c.raw.name,
    address,
    inbound: inboundFor(c, assumptions, warnings),
    auth: authFor(c, address, ctx),
  };

  const smtpHost = c.get("SmtpServer");
  const answer = bool(c, "AnswerEmails", true, warnings);
  if (smtpHost !== undefined) {
    const port = int(c, "SmtpPort", warnings);
    const tls = port === 465 ? "implicit" : "starttls";
    if (port !== undefined && ![465, 587, 25].includes(port)) assumptions.push(`${L}: SmtpPort ${port} is not a standard port; assumed STARTTLS`);
    mailbox.smtp = { host: smtpHost, ...(port !== undefined ? { port } : {}), tls };
  } else if (answer) {
    warnings.push(`${L}: AnswerEmails is true but SmtpServer is empty: agents cannot send replies until smtp is configured`);
  }
  if (mailbox.smtp !== undefined && bool(c, "UseBasicAuth", false, []) && isExchangeOnlineHost(smtpHost)) basicSmtpOnExchange(c, mailbox, ctx);

  const cc = addresses(c, "CC", warnings);
  const bcc = addresses(c, "BCC", warnings);
  if (cc.length > 0) mailbox.defaultCc = cc;
  if (bcc.length > 0) mailbox.defaultBcc = bcc;
  mailbox.agentsMayAnswer = answer;
  mailbox.agentsMayForward = bool(c, "ForwardEmails", true, warnings);
  const pause = num(c, "SleepBeforeSendNewIc", warnings);
  if (pause !== undefined) {
    if (pause < 0) warnings.push(`${L}: SleepBeforeSendNewIc ${pause} is negative; no pause was configured`);
    else mailbox.offerPauseSeconds = pause;
  }
  return mailbox;
}

function inboundFor(c: CampaignValues, assumptions: string[], warnings: string[]): MailboxInput["inbound"] {
  const L = c.label;
  const className = c.raw.className;
  let protocol: "imap" | "pop3";
  if (className !== undefined && /imap/i.test(className)) protocol = "imap";
  else if (className !== undefined && /pop/i.test(className)) protocol = "pop3";
  else {
    protocol = c.get("ImapServer") === undefined && c.get("PopServer") !== undefined ? "pop3" : "imap";
    warnings.push(`${L}: className "${className ?? ""}" is not a known email workflow class (InboundEmailImap, or a POP class); assumed ${protocol.toUpperCase()} because ${protocol === "imap" ? "ImapServer" : "only PopServer"} is set`);
  }
  const [hostField, portField, otherHost, otherPort] =
    protocol === "imap" ? (["ImapServer", "ImapPort", "PopServer", "PopPort"] as const) : (["PopServer", "PopPort", "ImapServer", "ImapPort"] as const);
  if (c.get(otherHost) !== undefined || c.get(otherPort) !== undefined) {
    assumptions.push(`${L}: ${otherHost}/${otherPort} are not used, because the campaign reads mail over ${protocol.toUpperCase()}`);
  }
  let host = c.get(hostField);
  if (host === undefined) {
    host = `${protocol}.example.invalid`;
    warnings.push(`${L}: ${hostField} is empty; the host is the placeholder ${host} — replace it`);
  }
  const port = int(c, portField, warnings);
  const implicitPort = protocol === "imap" ? 993 : 995;
  const starttlsPort = protocol === "imap" ? 143 : 110;
  let tls: "implicit" | "starttls" = "implicit";
  if (port === starttlsPort) {
    tls = "starttls";
    assumptions.push(`${L}: ${portField} ${port} → tls: starttls (Postroom does not log in over plain text)`);
  } else if (port !== undefined && port !== implicitPort) {
    assumptions.push(`${L}: ${portField} ${port} is not a standard port; assumed implicit TLS — set tls: starttls if the server upgrades`);
  }
  const inbound: MailboxInput["inbound"] = { protocol, host, ...(port !== undefined ? { port } : {}), tls };
  const interval = int(c, "EmailCheckInterval", warnings);
  if (interval !== undefined) {
    const clamped = Math.min(3600, Math.max(1, interval));
    if (clamped !== interval) warnings.push(`${L}: EmailCheckInterval ${interval} is outside 1..3600 seconds; used ${clamped}`);
    inbound.checkIntervalSeconds = clamped;
  }
  return inbound;
}

/**
 * UseBasicAuth=true with an Exchange Online SMTP server: password SMTP AUTH ends there at the end
 * of December 2026. Softdial's Azure fields (client id and tenant id) name an app that can send
 * with OAuth, so SMTP is moved to it (for a campaign that reads with Azure already, SMTP inherits
 * the mailbox's microsoft365 auth); without them the campaign keeps its password, with a warning.
 */
function basicSmtpOnExchange(c: CampaignValues, mailbox: MailboxInput, ctx: MailboxContext): void {
  const L = c.label;
  const host = mailbox.smtp?.host ?? "";
  const end = `Exchange Online turns password SMTP AUTH off by default at ${EXCHANGE_BASIC_SMTP_END.when}`;
  if (mailbox.auth.type === "microsoft365") {
    ctx.assumptions.push(`${L}: UseBasicAuth is true for ${host}, but ${end}: replies are sent with the campaign's Azure app over OAuth too — consent SMTP.SendAsApp for it and add the mailbox permission`);
    return;
  }
  if (c.get("AzureBusinessAuthClientId") !== undefined && c.get("AzureBusinessAuthTenantId") !== undefined) {
    mailbox.smtp = { ...mailbox.smtp!, auth: microsoftAuth(c, ctx) };
    ctx.warnings.push(`${L}: UseBasicAuth is true for ${host}, but ${end}: SMTP was switched to OAuth with the campaign's Azure fields (smtp.auth: microsoft365) — consent SMTP.SendAsApp for the app and add the mailbox permission (Add-MailboxPermission), or remove smtp.auth to keep the password until then`);
    return;
  }
  ctx.warnings.push(`${L}: UseBasicAuth is true and replies go through ${host} with a password: ${end}, and replies then fail with 550 5.7.30 — fix: ${EXCHANGE_BASIC_SMTP_END.fix}`);
}

/** microsoft365 client credentials from Softdial's Azure fields (the secret goes to the env file). */
function microsoftAuth(c: CampaignValues, ctx: MailboxContext): Extract<MailboxInput["auth"], { type: "microsoft365" }> {
  const { assumptions, warnings } = ctx;
  const L = c.label;
  const clientId = c.get("AzureBusinessAuthClientId");
  const tenantId = c.get("AzureBusinessAuthTenantId");
  if (clientId === undefined) warnings.push(`${L}: AzureBusinessAuthClientId is empty — fill in clientId (the app registration's Application (client) ID)`);
  else if (!GUID_PATTERN.test(clientId)) warnings.push(`${L}: AzureBusinessAuthClientId "${clientId}" is not a GUID — copy the Application (client) ID`);
  if (tenantId === undefined) warnings.push(`${L}: AzureBusinessAuthTenantId is empty — fill in tenantId (the Directory (tenant) ID)`);
  else if (["common", "consumers", "organizations"].includes(tenantId.toLowerCase())) {
    warnings.push(`${L}: AzureBusinessAuthTenantId "${tenantId}" is a multi-tenant alias; app-only tokens need the Directory (tenant) ID GUID`);
  }
  const secretName = ctx.uniqueEnv(`${ctx.envPrefix}_CLIENT_SECRET`);
  const secret = c.secret("AzureBusinessAuthSecret");
  ctx.env[secretName] = secret ?? "";
  if (secret === undefined) warnings.push(`${L}: AzureBusinessAuthSecret is empty — set ${secretName} in the env file to the client secret's Value`);
  else if (GUID_PATTERN.test(secret.trim())) {
    warnings.push(`${L}: AzureBusinessAuthSecret looks like a GUID: probably the secret's Secret ID, not its Value — replace ${secretName}`);
  }
  assumptions.push(`${L}: Azure business auth → microsoft365 client credentials in the global cloud (login.microsoftonline.com); set cloud: usgov or china for a sovereign cloud`);
  return { type: "microsoft365", tenantId: tenantId ?? "", clientId: clientId ?? "", clientSecret: `env:${secretName}`, cloud: "global" };
}

function authFor(c: CampaignValues, address: string, ctx: MailboxContext): MailboxInput["auth"] {
  const { assumptions, warnings } = ctx;
  const L = c.label;
  const basic = bool(c, "UseBasicAuth", false, warnings);
  const azure = bool(c, "UseAzureBusinessAuth", false, warnings);
  if (azure) {
    if (basic) warnings.push(`${L}: both UseBasicAuth and UseAzureBusinessAuth are true; Azure (Microsoft 365 OAuth) was used`);
    if (c.secret("EmailAccountPass") !== undefined) {
      assumptions.push(`${L}: EmailAccountPass is not used with Azure business auth, so it was not copied to the env file`);
    }
    return microsoftAuth(c, ctx);
  }
  if (!basic) warnings.push(`${L}: neither UseBasicAuth nor UseAzureBusinessAuth is true; assumed basic (password) authentication`);
  const name = ctx.uniqueEnv(`${ctx.envPrefix}_PASSWORD`);
  const password = c.secret("EmailAccountPass");
  ctx.env[name] = password ?? "";
  if (password === undefined) warnings.push(`${L}: EmailAccountPass is empty — set ${name} in the env file`);
  assumptions.push(`${L}: logs in as ${address} (the full address); add auth.username if the server expects only "${c.get("EmailAccount") ?? ""}"`);
  return { type: "password", password: `env:${name}` };
}

/** Archive settings of one campaign. */
function archiveFor(c: CampaignValues, paths: ArchivePathMapper, warnings: string[]): ArchiveInput {
  const archive: ArchiveInput = { path: paths.map(c.get("EmailInboxFolder"), c.label) };
  const quota = num(c, "EmailDiskSpace", warnings);
  if (quota !== undefined && quota > 0) archive.quotaGb = quota;
  const limit = num(c, "DiskSpaceWarningLimit", warnings);
  if (limit !== undefined) {
    if (limit < 0 || limit > 100) warnings.push(`${c.label}: DiskSpaceWarningLimit ${limit} is not a percentage (0..100); the default 20 applies`);
    else archive.warnPercentLeft = limit;
  }
  const alerts = addresses(c, "EmailAlert", warnings);
  archive.alertRecipients = alerts;
  archive.sendAlerts = bool(c, "SendEmailAlert", false, warnings);
  if (archive.sendAlerts && alerts.length === 0) warnings.push(`${c.label}: SendEmailAlert is true but EmailAlert is empty: no one will receive disk-space alerts`);
  return archive;
}

/** Maps Softdial's (Windows) archive folders to Linux ones: the first to the root, others beside it. */
class ArchivePathMapper {
  private readonly mapped = new Map<string, string>();
  private readonly used = new Set<string>();
  constructor(
    private readonly root: string,
    private readonly assumptions: string[],
  ) {}
  map(source: string | undefined, label: string): string {
    const key = source ?? "";
    const known = this.mapped.get(key);
    if (known !== undefined) return known;
    let target: string;
    if (source !== undefined && source.startsWith("/")) {
      target = source;
    } else if (this.used.size === 0) {
      target = this.root;
    } else {
      const last = source?.split(/[\\/]/).filter(Boolean).pop() ?? "";
      const stem = `${this.root}-${deriveId(last, "other")}`;
      target = stem;
      for (let i = 2; this.used.has(target); i++) target = `${stem}-${i}`;
    }
    this.used.add(target);
    this.mapped.set(key, target);
    if (source === undefined) this.assumptions.push(`${label}: EmailInboxFolder is empty; archive path ${target}`);
    else if (source !== target) {
      this.assumptions.push(
        `${label}: EmailInboxFolder "${source}" is a Windows path, which cannot be used on Linux → archive path ${target}; copy the old files there if they should stay with the new ones`,
      );
    }
    return target;
  }
}

function acdFor(tenantId: string, members: CampaignValues[], assumptions: string[], warnings: string[]): TenantInput["acd"] {
  const hosts = [...new Set(members.map((c) => c.get("ControllerIp")).filter((h): h is string => h !== undefined))];
  if (hosts.length === 0) {
    assumptions.push(`tenant "${tenantId}": no ControllerIp, so sessions go to the built-in ACD (acd: builtin)`);
    return { type: "builtin" };
  }
  if (hosts.length > 1) warnings.push(`tenant "${tenantId}": campaigns name different ControllerIp values (${hosts.join(", ")}); ${hosts[0]} was used`);
  // The campaign's controller address may carry the port it used ("10.0.0.5:6500"); the port
  // decides the text encoding: 6500 is CallGem's UTF-16LE port, 6502 its ASCII one.
  const [, host = hosts[0]!, portText] = /^(.*?)(?::(\d+))?$/.exec(hosts[0]!) ?? [];
  const port = portText === undefined ? SOFTDIAL_ACD_PORT : Number(portText);
  const encoding = port === SOFTDIAL_UNICODE_PORT ? "utf16le" : "ascii";
  if (portText === undefined) {
    assumptions.push(
      `tenant "${tenantId}": ControllerIp ${host} → Softdial ACD on port ${port} (ASCII; text in other scripts is tilde-escaped) — if the campaign used CallGem's Unicode port, set port: ${SOFTDIAL_UNICODE_PORT} and encoding: utf16le`,
    );
  } else {
    assumptions.push(`tenant "${tenantId}": ControllerIp ${hosts[0]} → Softdial ACD on port ${port} with encoding ${encoding}`);
  }
  return { type: "softdial", host, port, encoding };
}

function databaseFor(
  campaigns: CampaignValues[],
  env: Record<string, string>,
  uniqueEnv: (name: string) => string,
  assumptions: string[],
  warnings: string[],
  comments: Comment[],
): PostroomConfigInput["database"] {
  const distinct = (f: Field) => [...new Set(campaigns.map((c) => (f === "DataSourcePass" ? c.secret(f) : c.get(f))).filter((v): v is string => v !== undefined))];
  const dsns = distinct("DataSourceName");
  const users = distinct("DataSourceUser");
  const passwords = distinct("DataSourcePass");
  const user = users[0] ?? "postroom";
  const url = `postgres://${encodeURIComponent(user)}@127.0.0.1:5432/postroom`;
  if (dsns.length > 0) {
    warnings.push(
      `DataSourceName "${dsns.join('", "')}" is an ODBC data source, which has no PostgreSQL equivalent: database.url is the placeholder ${url} — point it at Postroom's PostgreSQL database`,
    );
    comments.push({ path: ["database", "url"], text: ` placeholder: Softdial used ODBC data source ${dsns.join(", ")}`, trailing: true });
  } else {
    assumptions.push(`no DataSourceName: database.url is ${url}`);
  }
  if (users.length > 1) warnings.push(`campaigns name different DataSourceUser values (${users.join(", ")}); ${user} was used`);
  if (passwords.length > 0) {
    // node-postgres reads PGPASSWORD, so the URL (which is printed and logged) needs no password.
    const name = uniqueEnv("PGPASSWORD");
    env[name] = passwords[0]!;
    assumptions.push(`DataSourcePass → ${name} in the env file (PostgreSQL clients read it; the URL carries no password)`);
    if (passwords.length > 1) warnings.push(`campaigns name different DataSourcePass values; the first campaign's was used for ${name}`);
  }
  return { url };
}

function logsFor(campaigns: CampaignValues[], linuxPath: string, assumptions: string[], warnings: string[], comments: Comment[]): Pick<PostroomConfigInput, "logs"> {
  const paths = [...new Set(campaigns.map((c) => c.get("LogsPath")).filter((p): p is string => p !== undefined))];
  if (paths.length === 0) return {};
  if (paths.length > 1) warnings.push(`campaigns name different LogsPath values (${paths.join(", ")}); Postroom has one logs.path`);
  const source = paths[0]!;
  const path = source.startsWith("/") ? source : linuxPath;
  if (path !== source) {
    assumptions.push(`LogsPath "${source}" is a Windows path → logs.path ${path}`);
    comments.push({ path: ["logs", "path"], text: ` Softdial: ${source}`, trailing: true });
  }
  return { logs: { path } };
}

// ---------------------------------------------------------------------------------------------
// Values

function bool(c: CampaignValues, field: Field, fallback: boolean, warnings: string[]): boolean {
  const v = c.get(field);
  if (v === undefined) return fallback;
  if (/^(true|1|yes)$/i.test(v)) return true;
  if (/^(false|0|no)$/i.test(v)) return false;
  warnings.push(`${c.label}: ${field} "${v}" is not true or false; used ${fallback}`);
  return fallback;
}

function num(c: CampaignValues, field: Field, warnings: string[]): number | undefined {
  const v = c.get(field);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) {
    warnings.push(`${c.label}: ${field} "${v}" is not a number; it was not imported`);
    return undefined;
  }
  return n;
}

function int(c: CampaignValues, field: Field, warnings: string[]): number | undefined {
  const n = num(c, field, warnings);
  if (n === undefined) return undefined;
  if (!Number.isInteger(n) || n < 0) {
    warnings.push(`${c.label}: ${field} "${c.get(field) ?? ""}" is not a whole number; it was not imported`);
    return undefined;
  }
  return n;
}

function addresses(c: CampaignValues, field: Field, warnings: string[]): string[] {
  const list = (c.get(field) ?? "").split(/[,;]/).map((a) => a.trim()).filter(Boolean);
  return list.filter((a) => {
    const ok = z.email().safeParse(a).success;
    if (!ok) warnings.push(`${c.label}: ${field} entry "${a}" is not a valid address; it was left out`);
    return ok;
  });
}

/** The fields of `archive` that differ from `base` (arrays compared by value). */
function differences(archive: ArchiveInput, base: ArchiveInput): Partial<ArchiveInput> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(archive)) {
    if (JSON.stringify(v) !== JSON.stringify((base as Record<string, unknown>)[k])) out[k] = v;
  }
  return out as Partial<ArchiveInput>;
}

/** A valid Postroom id: lowercase letters, digits, "-" and "_", starting with a letter or digit. */
export function deriveId(value: string, fallback: string): string {
  const id = value
    .normalize("NFKD")
    .replace(/[\u0300-\u036f]/g, "")
    .toLowerCase()
    .replace(/[^a-z0-9_-]+/g, "-")
    .replace(/^[-_]+|[-_]+$/g, "")
    .replace(/-{2,}/g, "-")
    .slice(0, 64)
    .replace(/[-_]+$/, "");
  return id === "" ? fallback : id;
}

function uniqueId(id: string, taken: Set<string>): string {
  let candidate = id;
  for (let i = 2; taken.has(candidate); i++) candidate = `${id.slice(0, 60)}-${i}`;
  taken.add(candidate);
  return candidate;
}

function envToken(id: string): string {
  return id.toUpperCase().replace(/[^A-Z0-9]+/g, "_");
}

// ---------------------------------------------------------------------------------------------
// Output

function render(config: PostroomConfigInput, comments: Comment[], options: SoftdialImportOptions): string {
  const doc = new Document(config);
  doc.commentBefore = [
    ` Postroom configuration imported from ${options.sourceName ?? "a Softdial Workflow config.xml"} by \`postroom config import-softdial\`.`,
    ` Secrets are not in this file: each env:NAME is read from the environment; the values are in`,
    ` ${options.envFileName} beside this file (mode 0600). Load it into the services' environment.`,
    ` Review the assumptions the import printed, then run: postroom config check <this file>`,
  ].join("\n");
  for (const comment of comments) {
    const node = doc.getIn(comment.path, true) as Node | undefined;
    if (!node) continue;
    if (comment.trailing) {
      node.comment = comment.text;
      continue;
    }
    const parent = doc.getIn(comment.path.slice(0, -1), true);
    const last = comment.path[comment.path.length - 1];
    if (isSeq(parent)) node.commentBefore = comment.text;
    else if (isMap(parent)) {
      const pair = parent.items.find((p) => (p.key as { value?: unknown }).value === last);
      if (pair) (pair.key as Node).commentBefore = comment.text;
    }
  }
  return doc.toString({ lineWidth: 0 });
}

/**
 * The env file's text: `NAME=value` lines, quoted when needed, in the dotenv syntax that
 * `node --env-file`, systemd's EnvironmentFile and docker compose's env_file all read.
 */
export function formatEnvFile(env: Record<string, string>, header?: string): string {
  const lines = header ? header.split("\n").map((l) => `# ${l}`.trimEnd()) : [];
  for (const [name, value] of Object.entries(env)) {
    let v = value;
    if (value !== "" && !/^[A-Za-z0-9_./:@+=,-]+$/.test(value)) {
      v = value.includes("'") ? `"${value.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"` : `'${value}'`;
    }
    lines.push(`${name}=${v}`);
  }
  return `${lines.join("\n")}\n`;
}
