import { formatPath, type ConfigIssue, type IssueSeverity } from "./issues.js";
import { EXCHANGE_BASIC_SMTP_END, isExchangeOnlineHost, isOutlookComHost, isProviderName, PROVIDER_PRESETS } from "./providers.js";

/**
 * Checks that zod's shape validation cannot express: duplicate ids, credentials that must come in
 * pairs, values that are valid strings but certainly wrong (a tenant id of "common", a GUID where a
 * secret's Value belongs), and warnings about risky but legal settings.
 *
 * It walks the raw input defensively rather than the parsed config, so it can run even when the
 * shape is invalid: an operator with a bad port and a duplicate mailbox id hears about both at once.
 * (A zod superRefine alone was tried: zod skips it whenever any field fails, hiding these issues
 * until the shape is fixed.)
 */

/** An issue with its path still as segments, so callers can map it to a YAML line or a zod path. */
export interface SemanticIssue extends ConfigIssue {
  severity: IssueSeverity;
  pathSegments: (string | number)[];
}

type Path = (string | number)[];
type Rec = Record<string, unknown>;

const isRec = (v: unknown): v is Rec => typeof v === "object" && v !== null && !Array.isArray(v);
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const str = (v: unknown): string | undefined => (typeof v === "string" ? v : undefined);

/** A GUID as Entra ID prints them (any version bits). */
export const GUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Entra ID's multi-tenant aliases: fine for interactive sign-in, useless for client credentials. */
const MULTI_TENANT_ALIASES = new Set(["common", "consumers", "organizations"]);

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|localhost|::1|\[::1\])$/i;

/** Well-known ports and the TLS mode each one speaks. */
const WELL_KNOWN_PORTS: Record<"imap" | "pop3" | "smtp", Record<number, "implicit" | "starttls">> = {
  imap: { 993: "implicit", 143: "starttls" },
  pop3: { 995: "implicit", 110: "starttls" },
  smtp: { 465: "implicit", 587: "starttls", 25: "starttls" },
};

/** All semantic issues, errors and warnings, over raw (unvalidated) input. */
export function semanticIssues(input: unknown): SemanticIssue[] {
  const out: SemanticIssue[] = [];
  const add = (severity: IssueSeverity, path: Path, message: string, fix: string | null) =>
    out.push({ severity, path: formatPath(path), pathSegments: path, message, fix });
  if (!isRec(input)) return out;

  checkDatabase(input.database, ["database"], add);
  const delegated = arr(input.tenants).some((t) =>
    isRec(t) && arr(t.mailboxes).some((m) => isRec(m) && ((isRec(m.auth) && DELEGATED.has(String(m.auth.type))) || (isRec(m.smtp) && isRec(m.smtp.auth) && DELEGATED.has(String(m.smtp.auth.type))))),
  );
  if (delegated && !isRec(input.tokenStore)) {
    add("error", ["tokenStore"], "a mailbox uses delegated auth (microsoft-delegated or google-delegated), but there is no tokenStore to keep its refresh token in", "add tokenStore: { key: env:POSTROOM_TOKEN_KEY } and set POSTROOM_TOKEN_KEY to 32 random bytes (openssl rand -base64 32)");
  }
  if (isRec(input.tokenStore)) {
    checkSecret(input.tokenStore.key, ["tokenStore", "key"], add);
    arr(input.tokenStore.previousKeys).forEach((k, i) => checkSecret(k, ["tokenStore", "previousKeys", i], add));
  }

  const tenants = arr(input.tenants);
  const tenantIds = new Map<string, number>();
  const addresses = new Map<string, string>();
  const aliases: { alias: string; path: Path; own: string }[] = [];
  tenants.forEach((tenant, ti) => {
    if (!isRec(tenant)) return;
    const tp: Path = ["tenants", ti];
    const tid = str(tenant.id);
    if (tid !== undefined) {
      const first = tenantIds.get(tid);
      if (first !== undefined) {
        add("error", [...tp, "id"], `duplicate tenant id "${tid}" (also tenants[${first}])`, "give each tenant its own id, or merge their mailboxes into one tenant");
      } else tenantIds.set(tid, ti);
    }

    if (isRec(tenant.acd) && tenant.acd.type === "webhook") checkSecret(tenant.acd.signingSecret, [...tp, "acd", "signingSecret"], add);
    if (isRec(tenant.acd) && tenant.acd.type === "softdial") {
      // CallGem's ports each have one encoding; the other one turns every frame into ER 901 or garbage.
      const { port, encoding } = tenant.acd;
      if (port === 6500 && encoding === "ascii") add("warning", [...tp, "acd", "encoding"], "port 6500 is CallGem's UTF-16LE port, but encoding is ascii", "remove encoding (port 6500 means utf16le), or use port 6502 for ASCII");
      if (port === 6502 && encoding === "utf16le") add("warning", [...tp, "acd", "encoding"], "port 6502 is CallGem's ASCII port, but encoding is utf16le", "remove encoding (port 6502 means ascii), or use port 6500 for UTF-16LE");
    }

    const agentIds = new Map<string, number>();
    arr(tenant.agents).forEach((agent, ai) => {
      if (!isRec(agent)) return;
      const aid = str(agent.id);
      if (aid !== undefined) {
        const first = agentIds.get(aid);
        if (first !== undefined) add("error", [...tp, "agents", ai, "id"], `duplicate agent id "${aid}" (also agents[${first}])`, "give each agent its own id");
        else agentIds.set(aid, ai);
      }
      checkSecret(agent.password, [...tp, "agents", ai, "password"], add);
    });

    const mailboxIds = new Map<string, number>();
    arr(tenant.mailboxes).forEach((mailbox, mi) => {
      if (!isRec(mailbox)) return;
      const mp: Path = [...tp, "mailboxes", mi];
      const mid = str(mailbox.id);
      if (mid !== undefined) {
        const first = mailboxIds.get(mid);
        if (first !== undefined) {
          add("error", [...mp, "id"], `duplicate mailbox id "${mid}" in tenant "${tid ?? ti}" (also mailboxes[${first}])`, "give each mailbox of a tenant its own id");
        } else mailboxIds.set(mid, mi);
      }
      const address = str(mailbox.address)?.toLowerCase();
      if (address !== undefined) {
        const first = addresses.get(address);
        if (first !== undefined) {
          add("warning", [...mp, "address"], `the address ${address} is also configured at ${first}: its mail would be imported twice`, "configure each mailbox once");
        } else addresses.set(address, formatPath(mp));
      }
      arr(mailbox.aliases).forEach((alias, ai) => {
        const a = str(alias)?.toLowerCase();
        if (a !== undefined) aliases.push({ alias: a, path: [...mp, "aliases", ai], own: formatPath(mp) });
      });
      checkMailbox(mailbox, mp, add);
    });
  });
  // An alias is treated as the mailbox's own address: mail from it is a loop, never offered.
  for (const { alias, path, own } of aliases) {
    const other = addresses.get(alias);
    if (other === own) add("warning", path, `the alias ${alias} is the mailbox's own address`, "remove it: the address is always the mailbox's own");
    else if (other !== undefined) {
      add("warning", path, `the alias ${alias} is the address of ${other}: mail that mailbox sends here would be taken for a loop and never offered`, "remove the alias, unless that mailbox really is this one under another name");
    }
  }
  return out;
}

/** Semantic issues as operator-facing ConfigIssues, errors first. */
export function checkConfig(input: unknown): ConfigIssue[] {
  const issues = semanticIssues(input).map(({ pathSegments: _segments, ...issue }) => issue);
  return [...issues.filter((i) => i.severity === "error"), ...issues.filter((i) => i.severity === "warning")];
}

type Add = (severity: IssueSeverity, path: Path, message: string, fix: string | null) => void;

function checkMailbox(mailbox: Rec, mp: Path, add: Add): void {
  const preset = isProviderName(mailbox.provider) ? PROVIDER_PRESETS[mailbox.provider] : undefined;
  const inbound = mailbox.inbound;
  if (isRec(inbound)) {
    const protocol = inbound.protocol === "pop3" ? "pop3" : inbound.protocol === "imap" ? "imap" : undefined;
    if (protocol) {
      checkTransport(protocol, inbound, [...mp, "inbound"], "implicit", add);
      const afterImport = isRec(inbound.afterImport) ? inbound.afterImport : undefined;
      if (afterImport && afterImport.action !== "move" && afterImport.folder !== undefined) {
        add("warning", [...mp, "inbound", "afterImport", "folder"], `folder is ignored because action is "${String(afterImport.action ?? "mark-seen")}"`, 'remove folder, or set action: move');
      }
      if (protocol === "pop3") {
        if (inbound.folder !== undefined && inbound.folder !== "INBOX") {
          add("warning", [...mp, "inbound", "folder"], "POP3 has only the inbox; this folder is ignored", "remove folder, or use protocol: imap to read another folder");
        }
        if (afterImport && (afterImport.action === "move" || afterImport.action === "mark-seen") && inbound.afterImport !== undefined) {
          add("warning", [...mp, "inbound", "afterImport", "action"], `POP3 cannot ${afterImport.action === "move" ? "move messages" : "mark messages seen"}`, "remove afterImport and use pop3LeaveOnServer to choose whether mail is deleted");
        }
      }
    }
  }

  for (const [auth, path] of [
    [mailbox.auth, [...mp, "auth"]],
    [isRec(mailbox.smtp) ? mailbox.smtp.auth : undefined, [...mp, "smtp", "auth"]],
  ] as [unknown, Path][]) {
    if (isRec(auth)) checkAuth(auth, path, add);
  }

  if (isRec(mailbox.smtp)) checkTransport("smtp", mailbox.smtp, [...mp, "smtp"], "starttls", add);
  if (isRec(mailbox.smtp)) {
    // A message at the cap would have the minute's recipient allowance to itself, and wait for it.
    const cap = typeof mailbox.smtp.maxRecipients === "number" ? mailbox.smtp.maxRecipients : 50;
    const perMinute = typeof mailbox.smtp.recipientsPerMinute === "number" ? mailbox.smtp.recipientsPerMinute : 100;
    if (perMinute < cap) {
      add("warning", [...mp, "smtp", "recipientsPerMinute"], `recipientsPerMinute (${perMinute}) is below maxRecipients (${cap}): a message with that many recipients waits for an empty minute`, `raise recipientsPerMinute to at least ${cap}, or lower maxRecipients`);
    }
  }
  else if (mailbox.smtp === undefined && mailbox.agentsMayAnswer !== false && preset === undefined && mailbox.outbound !== "graph") {
    add("warning", [...mp, "smtp"], "no smtp server, but agentsMayAnswer is on: agents' replies cannot be sent", "add smtp: { host: smtp.example.com, port: 587 } (or outbound: graph), or set agentsMayAnswer: false");
  }

  checkPasswordOnMicrosoft(mailbox, mp, preset?.smtp.host, add);

  const routing = mailbox.routing;
  if (isRec(routing)) {
    arr(routing.rules).forEach((rule, ri) => {
      if (!isRec(rule)) return;
      for (const field of ["from", "to", "cc", "subject"] as const) {
        const m = rule[field];
        if (!isRec(m) || typeof m.regex !== "string") continue;
        try {
          new RegExp(m.regex);
        } catch (e) {
          const why = (e as Error).message.replace(/^Invalid regular expression: /, "");
          add("error", [...mp, "routing", "rules", ri, field, "regex"], `the regular expression does not compile: ${why}`, "fix the pattern (JavaScript syntax), or use exact, domain or wildcard instead");
        }
      }
    });
  }

  const archive = mailbox.archive;
  if (isRec(archive) && typeof archive.path === "string" && /^[a-z]:[\\/]/i.test(archive.path)) {
    add("error", [...mp, "archive", "path"], "is a Windows path; Postroom runs on Linux", "use a Linux path such as /var/lib/postroom/archive");
  }
}

/**
 * Password logins to Microsoft's hosted mail: Outlook.com stopped taking them in September 2024,
 * Exchange Online stopped for IMAP/POP in 2022 and stops for SMTP at the end of December 2026.
 * Warnings, not errors: until that date the configuration works, and a tenant admin may have
 * re-enabled basic SMTP AUTH for a while; the point is that nobody is surprised on 1 January.
 */
function checkPasswordOnMicrosoft(mailbox: Rec, mp: Path, presetSmtpHost: string | undefined, add: Add): void {
  const auth = isRec(mailbox.auth) ? mailbox.auth : undefined;
  const smtp = isRec(mailbox.smtp) ? mailbox.smtp : undefined;
  const inbound = isRec(mailbox.inbound) ? mailbox.inbound : undefined;
  const smtpAuth = smtp && isRec(smtp.auth) ? smtp.auth : auth;
  const smtpAuthPath: Path = smtp && isRec(smtp.auth) ? [...mp, "smtp", "auth"] : [...mp, "auth"];
  const smtpHost = smtp ? (str(smtp.host) ?? presetSmtpHost) : presetSmtpHost;
  if (smtpAuth?.type === "password" && isExchangeOnlineHost(smtpHost)) {
    add(
      "warning",
      smtpAuthPath,
      `sends through ${smtpHost} with a password (SMTP AUTH basic): Exchange Online turns that off by default at ${EXCHANGE_BASIC_SMTP_END.when} (and new tenants cannot use it at all); from then every reply fails with 550 5.7.30`,
      EXCHANGE_BASIC_SMTP_END.fix,
    );
  }
  if (smtpAuth?.type === "password" && isOutlookComHost(smtpHost)) {
    add("warning", smtpAuthPath, `sends through ${smtpHost} with a password: Outlook.com ended password and app-password logins on 16 September 2024`, PROVIDER_PRESETS["outlook-com"].authFix);
  }
  const inboundHost = inbound ? str(inbound.host) : undefined;
  if (auth?.type === "password" && mailbox.provider === undefined && (isExchangeOnlineHost(inboundHost) || isOutlookComHost(inboundHost))) {
    add(
      "warning",
      [...mp, "auth"],
      `reads ${inboundHost} with a password: Microsoft no longer accepts passwords over IMAP and POP (Exchange Online since 2022, Outlook.com since September 2024)`,
      isOutlookComHost(inboundHost) ? PROVIDER_PRESETS["outlook-com"].authFix : PROVIDER_PRESETS.office365.authFix,
    );
  }
}

function checkTransport(kind: "imap" | "pop3" | "smtp", t: Rec, path: Path, defaultTls: string, add: Add): void {
  const tls = str(t.tls) ?? defaultTls;
  const port = typeof t.port === "number" ? t.port : undefined;
  const host = str(t.host);
  if (port !== undefined) {
    const expected = WELL_KNOWN_PORTS[kind][port];
    if (expected && expected !== tls) {
      add("warning", [...path, "tls"], `port ${port} normally speaks ${expected === "implicit" ? "implicit TLS" : "STARTTLS"}, but tls is "${tls}": the connection will likely hang or fail`, `set tls: ${expected}`);
    }
    const other = (Object.keys(WELL_KNOWN_PORTS) as (keyof typeof WELL_KNOWN_PORTS)[]).find((k) => k !== kind && WELL_KNOWN_PORTS[k][port] !== undefined);
    if (!expected && other && kind !== "smtp") {
      add("warning", [...path, "port"], `port ${port} is a ${other.toUpperCase()} port, but this is ${kind.toUpperCase()}`, `check the port (${kind === "imap" ? "993 or 143" : "995 or 110"})`);
    }
  }
  if (tls === "none" && host !== undefined && !LOOPBACK.test(host)) {
    add("warning", [...path, "tls"], `tls is "none" for ${host}: credentials and mail travel in plain text`, "use tls: implicit or starttls; none is meant for local test servers");
  }
  if (t.verifyCertificate === false) {
    add("warning", [...path, "verifyCertificate"], "certificate verification is off: anyone on the path can impersonate the server", "remove verifyCertificate: false outside tests");
  }
}

/** Auth types whose refresh token token-service keeps in the tokenStore. */
const DELEGATED = new Set(["microsoft-delegated", "google-delegated"]);

function checkAuth(auth: Rec, path: Path, add: Add): void {
  if (auth.type === "password") {
    checkSecret(auth.password, [...path, "password"], add);
  } else if (auth.type === "google-service-account") {
    checkSecret(auth.keyFile, [...path, "keyFile"], add);
  } else if (auth.type === "google-delegated") {
    checkSecret(auth.clientSecret, [...path, "clientSecret"], add);
  } else if (auth.type === "microsoft-delegated") {
    const tenant = str(auth.tenant)?.trim().toLowerCase();
    if (tenant === "common") {
      add("warning", [...path, "tenant"], '"common" lets any account sign in, but a mailbox is either a consumer or a work account', "use consumers (Outlook.com), organizations (work accounts) or the tenant id");
    }
  } else if (auth.type === "microsoft365") {
    const tenantId = str(auth.tenantId);
    if (tenantId !== undefined && MULTI_TENANT_ALIASES.has(tenantId.trim().toLowerCase())) {
      add("error", [...path, "tenantId"], `"${tenantId}" is a multi-tenant alias; app-only (client credentials) tokens need the organisation's own tenant`, "use the Directory (tenant) ID GUID from Entra ID → Overview, or a verified domain such as contoso.onmicrosoft.com");
    }
    const cert = isRec(auth.certificate) ? auth.certificate : undefined;
    if (auth.clientSecret === undefined && auth.certificate === undefined) {
      add("error", path, "microsoft365 auth needs a credential: neither clientSecret nor certificate is given", "add clientSecret: env:NAME (the secret's Value from Entra ID → App registrations → Certificates & secrets), or certificate: { certificate: file:/path/cert.pem, privateKey: file:/path/key.pem }");
    } else if (auth.clientSecret !== undefined && auth.certificate !== undefined) {
      add("warning", path, "both clientSecret and certificate are given", "keep only one, so it is clear which credential is in use");
    }
    const secret = str(auth.clientSecret);
    if (secret !== undefined && GUID_PATTERN.test(secret.trim())) {
      add("warning", [...path, "clientSecret"], "looks like a GUID: that is probably the secret's Secret ID, not its Value", "copy the Value column (shown only once, when the secret is created; create a new secret if it is lost)");
    } else {
      checkSecret(auth.clientSecret, [...path, "clientSecret"], add);
    }
    if (cert) {
      checkSecret(cert.certificate, [...path, "certificate", "certificate"], add);
      checkSecret(cert.privateKey, [...path, "certificate", "privateKey"], add);
    }
  }
}

/** A secret should be a reference; a literal works but ends up in backups, diffs and screen shares. */
function checkSecret(value: unknown, path: Path, add: Add): void {
  if (typeof value !== "string" || value === "") return;
  if (value.startsWith("env:")) {
    const name = value.slice(4);
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
      add("error", path, `"${value}" does not name an environment variable`, "write env:NAME with letters, digits and _ only, e.g. env:MAILBOX_PASSWORD");
    }
  } else if (value.startsWith("file:")) {
    if (!value.slice(5).startsWith("/")) {
      add("warning", path, "the secret file path is relative: it depends on the directory each service starts in", "use an absolute path, e.g. file:/run/secrets/mailbox-password");
    }
  } else {
    add("warning", path, "is an inline secret: it is readable by anyone who can read this file", "put the value in an environment variable (or a file) and write env:NAME (or file:/path)");
  }
}

const DATABASE_SERVICES = ["archiver", "asd-bridge", "smtp-sender"] as const;

function checkDatabase(database: unknown, path: Path, add: Add): void {
  if (!isRec(database)) return;
  if (isRec(database.users)) {
    const users = database.users;
    const given = DATABASE_SERVICES.filter((s) => users[s] !== undefined);
    const missing = DATABASE_SERVICES.filter((s) => users[s] === undefined);
    if (given.length > 0 && missing.length > 0) {
      add("error", [...path, "users"], `names ${given.join(", ")} but not ${missing.join(", ")}`, "give every service that uses PostgreSQL its own user (archiver, asd-bridge, smtp-sender), or remove database.users");
    }
    for (const s of given) {
      const u = users[s];
      if (!isRec(u)) continue;
      const up: Path = [...path, "users", s];
      if (u.url !== undefined && (u.user !== undefined || u.password !== undefined)) {
        add("error", up, "has both url and user/password", "write either url: env:NAME (the whole connection URL) or user + password");
      } else if (u.url === undefined && u.user === undefined) {
        add("error", up, "names no user", `add user: postroom_${s.replaceAll("-", "_")}_login (and password: env:NAME), or url: env:NAME`);
      }
      if (typeof u.password === "string") checkSecret(u.password, [...up, "password"], add);
      if (typeof u.url === "string" && !u.url.startsWith("env:") && !u.url.startsWith("file:")) {
        add("error", [...up, "url"], "is not a reference", "put the URL (it holds the password) in an environment variable or file and write env:NAME or file:/path");
      }
    }
  }
  if (typeof database.url !== "string") return;
  const url = database.url;
  if (url.startsWith("env:") || url.startsWith("file:")) return;
  if (/^postgres(ql)?:\/\/[^/@:]*:[^@]+@/i.test(url)) {
    add("warning", [...path, "url"], "contains an inline password", "leave the password out of the URL and set PGPASSWORD in the environment, or write url: env:DATABASE_URL");
  }
}
