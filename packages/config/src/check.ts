import { formatPath, type ConfigIssue, type IssueSeverity } from "./issues.js";

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

  const tenants = arr(input.tenants);
  const tenantIds = new Map<string, number>();
  const addresses = new Map<string, string>();
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
      checkMailbox(mailbox, mp, add);
    });
  });
  return out;
}

/** Semantic issues as operator-facing ConfigIssues, errors first. */
export function checkConfig(input: unknown): ConfigIssue[] {
  const issues = semanticIssues(input).map(({ pathSegments: _segments, ...issue }) => issue);
  return [...issues.filter((i) => i.severity === "error"), ...issues.filter((i) => i.severity === "warning")];
}

type Add = (severity: IssueSeverity, path: Path, message: string, fix: string | null) => void;

function checkMailbox(mailbox: Rec, mp: Path, add: Add): void {
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
  else if (mailbox.smtp === undefined && mailbox.agentsMayAnswer !== false) {
    add("warning", [...mp, "smtp"], "no smtp server, but agentsMayAnswer is on: agents' replies cannot be sent", "add smtp: { host: smtp.example.com, port: 587 }, or set agentsMayAnswer: false");
  }

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

function checkAuth(auth: Rec, path: Path, add: Add): void {
  if (auth.type === "password") {
    checkSecret(auth.password, [...path, "password"], add);
  } else if (auth.type === "google-service-account") {
    checkSecret(auth.keyFile, [...path, "keyFile"], add);
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

function checkDatabase(database: unknown, path: Path, add: Add): void {
  if (!isRec(database) || typeof database.url !== "string") return;
  const url = database.url;
  if (url.startsWith("env:") || url.startsWith("file:")) return;
  if (/^postgres(ql)?:\/\/[^/@:]*:[^@]+@/i.test(url)) {
    add("warning", [...path, "url"], "contains an inline password", "leave the password out of the URL and set PGPASSWORD in the environment, or write url: env:DATABASE_URL");
  }
}
