import { commandTarget } from "./run-state.js";
import { envFileFor, readEnvFile } from "./secrets-preflight.js";
import { readFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { findMailbox, graphEndpoint, GRAPH_ENDPOINTS, resolveSecret, validateConfig, type MailboxAuth } from "@postroom/config";
import { MICROSOFT_CLOUDS, expiryWarnings, parseServiceAccountKey, type MicrosoftCloudName } from "@postroom/token-service";
import { EXIT_USAGE } from "../dispatch.js";
import { formatReport, allPassed, type StepResult, type TestAuthReport } from "./test-auth-report.js";
import { AuthChecks, microsoftSanity, type AuthTarget, type ServerTarget, type TargetAuth } from "./test-auth-steps.js";
import { checkClock, checkEndpoint, type Endpoint } from "./test-auth-env.js";

export const help = `Usage:
  postroom test-auth [--env-only] [--cloud NAME] [hosts] [--json]
  postroom test-auth --config FILE --mailbox [TENANT/]ID [--send-to ADDRESS] [--json]
  postroom test-auth --tenant-id ID --client-id ID (--client-secret-env NAME | --client-secret VALUE)
                     --mailbox-address ADDRESS [hosts] [--send-to ADDRESS] [--json]

Checks that a mailbox can authenticate, step by step, and explains every failure with the fix.
First the environment (DNS, TCP and TLS to the identity platform and each mail host, and the local
clock against the identity platform's Date header), then the configuration's sanity, the token
(Microsoft 365 or Google service account) and its decoded claims (aud, tid, appid, roles, expiry;
not verified), IMAP login and SELECT, POP3 login and STAT (when configured), SMTP login, and —
only with --send-to — one real test message. Exit code 0 only when every step passed.
A mailbox that reads or sends through Microsoft Graph (inbound.protocol: graph, outbound: graph)
is tested with a Graph token instead: its roles must include Mail.ReadWrite (reading) and Mail.Send
(sending), then the folder is opened through Graph and --send-to sends through Graph.

Run with no arguments (or --env-only) it checks only the environment, for the cloud's identity
platform and mail hosts (or the hosts given): whether this machine can reach them at all.
The third form needs no config file: the four Microsoft values an administrator has at hand.
Its mail hosts default to the cloud's (outlook.office365.com:993, smtp.office365.com:587).

Options:
  -c, --config FILE            the Postroom config file (default with --mailbox: $POSTROOM_CONFIG, then the running up/demo)
  -m, --mailbox [TENANT/]ID    the mailbox to test (TENANT/ when ids repeat across tenants)
      --tenant-id ID           Directory (tenant) ID GUID or verified domain
      --client-id ID           Application (client) ID
      --client-secret-env NAME read the secret's Value from this environment variable
      --client-secret VALUE    the secret's Value (visible in the process list: prefer -env)
      --mailbox-address ADDR   the mailbox (user= of XOAUTH2)
      --cloud NAME             global (default), usgov or china
      --scope SCOPE            default: the cloud's https://outlook.office365.com/.default
      --authority-host URL     token host override (proxies, tests)
      --imap-host HOST[:PORT]  default: the cloud's IMAP host, port 993
      --imap-tls MODE          implicit (default), starttls or none
      --folder NAME            folder to select (default INBOX)
      --pop3-host HOST[:PORT]  also test POP3 (port 995 by default)
      --pop3-tls MODE          implicit (default), starttls or none
      --smtp-host HOST[:PORT]  default: the cloud's SMTP host, port 587
      --smtp-tls MODE          starttls (default), implicit or none
      --no-imap, --no-smtp     skip that protocol
      --insecure               do not verify mail servers' TLS certificates (test servers only)
      --env-only               only the environment checks (the default with no arguments)
      --send-to ADDRESS        send one real test message after the SMTP login
      --json                   print the report as JSON
  -h, --help                   show this help

Exit codes: 0 every step passed, 1 a step failed, 2 usage error.
`;

const OPTIONS = {
  config: { type: "string", short: "c" },
  mailbox: { type: "string", short: "m" },
  "tenant-id": { type: "string" },
  "client-id": { type: "string" },
  "client-secret-env": { type: "string" },
  "client-secret": { type: "string" },
  "mailbox-address": { type: "string" },
  cloud: { type: "string" },
  scope: { type: "string" },
  "authority-host": { type: "string" },
  "imap-host": { type: "string" },
  "imap-tls": { type: "string" },
  folder: { type: "string" },
  "pop3-host": { type: "string" },
  "pop3-tls": { type: "string" },
  "smtp-host": { type: "string" },
  "smtp-tls": { type: "string" },
  "no-imap": { type: "boolean" },
  "no-smtp": { type: "boolean" },
  insecure: { type: "boolean" },
  "env-only": { type: "boolean" },
  "send-to": { type: "string" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

type Values = ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: false }>>["values"];

class UsageError extends Error {
  override name = "UsageError";
}

const TLS_MODES = new Set(["implicit", "starttls", "none"]);

function hostPort(value: string, defaultPort: number): { host: string; port: number } {
  const m = /^(.+?)(?::(\d+))?$/.exec(value.trim());
  if (!m) throw new UsageError(`"${value}" is not HOST or HOST:PORT`);
  return { host: m[1]!, port: m[2] ? Number(m[2]) : defaultPort };
}

function tlsMode(value: string | undefined, fallback: ServerTarget["tls"], flag: string): ServerTarget["tls"] {
  if (value === undefined) return fallback;
  if (!TLS_MODES.has(value)) throw new UsageError(`${flag} must be implicit, starttls or none`);
  return value as ServerTarget["tls"];
}

/** The no-config form: the four Microsoft values plus optional hosts. */
function targetFromFlags(v: Values, env: NodeJS.ProcessEnv): AuthTarget {
  const tenantId = v["tenant-id"];
  const clientId = v["client-id"];
  const address = v["mailbox-address"];
  if (!tenantId || !clientId || !address) throw new UsageError("give --tenant-id, --client-id and --mailbox-address (or --config and --mailbox)");
  let clientSecret = v["client-secret"];
  if (v["client-secret-env"] !== undefined) {
    clientSecret = env[v["client-secret-env"]];
    if (!clientSecret) throw new UsageError(`environment variable ${v["client-secret-env"]} is not set`);
  }
  if (clientSecret === undefined) throw new UsageError("give --client-secret-env NAME (or --client-secret VALUE)");
  const cloud = (v.cloud ?? "global") as MicrosoftCloudName;
  if (!(cloud in MICROSOFT_CLOUDS)) throw new UsageError("--cloud must be global, usgov or china");
  const hosts = MICROSOFT_CLOUDS[cloud];
  const verify = v.insecure !== true;
  const imapTls = tlsMode(v["imap-tls"], "implicit", "--imap-tls");
  const pop3Tls = tlsMode(v["pop3-tls"], "implicit", "--pop3-tls");
  const smtpTls = tlsMode(v["smtp-tls"], "starttls", "--smtp-tls");
  const defaultPort = (mode: ServerTarget["tls"], implicit: number, starttls: number, none: number) => (mode === "implicit" ? implicit : mode === "starttls" ? starttls : none);
  const credentials = {
    tenantId,
    clientId,
    clientSecret,
    cloud,
    ...(v.scope ? { scope: v.scope } : {}),
    ...(v["authority-host"] ? { authorityHost: v["authority-host"] } : {}),
  };
  return {
    address,
    auth: { type: "microsoft365", credentials },
    ...(v["no-imap"] ? {} : { imap: { ...hostPort(v["imap-host"] ?? hosts.imapHost, defaultPort(imapTls, 993, 143, 143)), tls: imapTls, verifyCertificate: verify, folder: v.folder ?? "INBOX" } }),
    ...(v["pop3-host"] ? { pop3: { ...hostPort(v["pop3-host"], defaultPort(pop3Tls, 995, 110, 110)), tls: pop3Tls, verifyCertificate: verify } } : {}),
    ...(v["no-smtp"] ? {} : { smtp: { ...hostPort(v["smtp-host"] ?? hosts.smtpHost, defaultPort(smtpTls, 465, 587, 25)), tls: smtpTls, verifyCertificate: verify } }),
    ...(v["send-to"] ? { sendTo: v["send-to"] } : {}),
    sanity: microsoftSanity({ tenantId, clientId, clientSecret, scope: v.scope }),
  };
}

/** Only the environment: the identity platform and the mail hosts of the cloud (or those given). */
async function environmentOnly(v: Values): Promise<TestAuthReport> {
  const cloud = (v.cloud ?? "global") as MicrosoftCloudName;
  if (!(cloud in MICROSOFT_CLOUDS)) throw new UsageError("--cloud must be global, usgov or china");
  const hosts = MICROSOFT_CLOUDS[cloud];
  const identity = new URL(v["authority-host"] ?? hosts.authorityHost);
  const verify = v.insecure !== true;
  const imapTls = tlsMode(v["imap-tls"], "implicit", "--imap-tls");
  const smtpTls = tlsMode(v["smtp-tls"], "starttls", "--smtp-tls");
  const pop3Tls = tlsMode(v["pop3-tls"], "implicit", "--pop3-tls");
  const endpoints: Endpoint[] = [
    { role: "identity platform", host: identity.hostname, port: Number(identity.port || 443), implicitTls: identity.protocol === "https:" },
    ...(v["no-imap"] ? [] : [{ role: "IMAP", ...hostPort(v["imap-host"] ?? hosts.imapHost, imapTls === "implicit" ? 993 : 143), implicitTls: imapTls === "implicit", verifyCertificate: verify }]),
    ...(v["pop3-host"] ? [{ role: "POP3", ...hostPort(v["pop3-host"], pop3Tls === "implicit" ? 995 : 110), implicitTls: pop3Tls === "implicit", verifyCertificate: verify }] : []),
    ...(v["no-smtp"] ? [] : [{ role: "SMTP", ...hostPort(v["smtp-host"] ?? hosts.smtpHost, smtpTls === "implicit" ? 465 : smtpTls === "starttls" ? 587 : 25), implicitTls: smtpTls === "implicit", verifyCertificate: verify }]),
  ];
  const steps: StepResult[] = [];
  let identityReachable = true;
  for (const e of endpoints) {
    const results = await checkEndpoint(e);
    steps.push(...results);
    if (e.role === "identity platform" && results.some((r) => r.verdict === "fail")) identityReachable = false;
  }
  if (identityReachable) steps.push(await checkClock(identity.origin));
  return { mailbox: `environment (${cloud} cloud)`, ok: allPassed(steps), steps };
}

/** Resolves one config auth block; a missing secret becomes a failed config step, not an exception. */
async function resolveAuth(auth: MailboxAuth, address: string, env: NodeJS.ProcessEnv, sanity: StepResult[], scope?: string): Promise<TargetAuth | undefined> {
  const secret = async (ref: string, field: string) => {
    try {
      return await resolveSecret(ref, env);
    } catch (error) {
      sanity.push({ step: "config", verdict: "fail", summary: `${field}: ${(error as Error).message}`, explanation: { code: "secret-unresolved", meaning: "the secret reference cannot be resolved on this machine", fix: "export the environment variable (or create the file) the config names, then run again" } });
      return undefined;
    }
  };
  if (auth.type === "password") {
    const password = await secret(auth.password, "password");
    return password === undefined ? undefined : { type: "password", username: auth.username ?? address, password };
  }
  if (auth.type === "microsoft-delegated") {
    // The refresh token is token-service's alone (sealed in its store): this command cannot get a
    // token of its own without signing the person in again.
    sanity.push({
      step: "config",
      verdict: "fail",
      summary: `delegated auth (client ${auth.clientId}, tenant ${auth.tenant ?? "organizations"}): test-auth cannot test it on its own`,
      explanation: { code: "delegated", meaning: "only token-service holds the mailbox's refresh token", fix: "run postroom auth sign-in --config <file> --mailbox <id>, then postroom status shows whether IMAP/POP/SMTP log in" },
    });
    return undefined;
  }
  if (auth.type === "google-delegated") {
    sanity.push({
      step: "config",
      verdict: "fail",
      summary: `delegated Google auth (client ${auth.clientId}): test-auth cannot test it on its own`,
      explanation: { code: "delegated", meaning: "only token-service holds the mailbox's refresh token", fix: "run postroom auth sign-in --config <file> --mailbox <id>, then postroom status shows whether IMAP/POP/SMTP log in" },
    });
    return undefined;
  }
  if (auth.type === "google-service-account") {
    const text = await secret(auth.keyFile, "keyFile");
    if (text === undefined) return undefined;
    try {
      return { type: "google-service-account", key: parseServiceAccountKey(text), ...(auth.tokenUrl ? { tokenUrl: auth.tokenUrl } : {}) };
    } catch (error) {
      sanity.push({ step: "config", verdict: "fail", summary: `keyFile: ${(error as Error).message}`, explanation: { code: "key-invalid", meaning: "the service account key cannot be used", fix: "download a new JSON key from Google Cloud → IAM → Service accounts → Keys" } });
      return undefined;
    }
  }
  const clientSecret = auth.clientSecret === undefined ? undefined : await secret(auth.clientSecret, "clientSecret");
  const certificatePem = auth.certificate ? await secret(auth.certificate.certificate, "certificate.certificate") : undefined;
  const privateKeyPem = auth.certificate ? await secret(auth.certificate.privateKey, "certificate.privateKey") : undefined;
  if (auth.clientSecret !== undefined && clientSecret === undefined) return undefined;
  if (auth.certificate && (certificatePem === undefined || privateKeyPem === undefined)) return undefined;
  sanity.push(...microsoftSanity({ tenantId: auth.tenantId, clientId: auth.clientId, clientSecret, scope }));
  // The same expiry warnings token-service publishes: the secret by the config's date, the certificate by its own.
  for (const w of expiryWarnings({ clientSecretExpires: auth.clientSecretExpires, certificatePem }, new Date())) {
    sanity.push({ step: "config", verdict: "warn", summary: w.message, explanation: { code: `${w.what} expiry`, meaning: `the ${w.what} stops working on ${w.expiresAt.toISOString().slice(0, 10)}`, fix: w.fix } });
  }
  return {
    type: "microsoft365",
    credentials: {
      tenantId: auth.tenantId,
      clientId: auth.clientId,
      cloud: auth.cloud as MicrosoftCloudName,
      ...(clientSecret === undefined ? {} : { clientSecret }),
      ...(certificatePem && privateKeyPem ? { certificate: { certificatePem, privateKeyPem } } : {}),
      ...(auth.authorityHost ? { authorityHost: auth.authorityHost } : {}),
      ...(scope ? { scope } : {}),
    },
  };
}

/** The config form: everything from the mailbox's entry. */
async function targetFromConfig(v: Values, env: NodeJS.ProcessEnv): Promise<AuthTarget | { failed: StepResult[] }> {
  const file = v.config!;
  if (!v.mailbox) throw new UsageError("give --mailbox ID with --config");
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    throw new UsageError(`cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  const { config, errors } = validateConfig(text);
  if (!config) {
    return { failed: errors.map((e) => ({ step: "config", verdict: "fail", summary: `${e.path || "(top level)"}: ${e.message}`, explanation: { code: "config", meaning: "the config file is invalid", fix: e.fix ?? "run postroom config check for details" } })) };
  }
  const [tenantPart, idPart] = v.mailbox.includes("/") ? v.mailbox.split("/", 2) : [undefined, v.mailbox];
  const matches = config.tenants.flatMap((t) => t.mailboxes.filter((m) => m.id === idPart && (tenantPart === undefined || t.id === tenantPart)).map(() => t.id));
  if (matches.length !== 1) throw new UsageError(matches.length === 0 ? `no mailbox "${v.mailbox}" in ${file}` : `mailbox "${idPart}" exists in several tenants: give TENANT/${idPart}`);
  const ref = findMailbox(config, matches[0]!, idPart!)!;
  const { mailbox } = ref;
  const sanity: StepResult[] = [{ step: "config", verdict: "pass", summary: `${file}: mailbox ${ref.tenant.id}/${mailbox.id} (${mailbox.address}), ${mailbox.auth.type}` }];
  // A Graph mailbox is tested with a Graph token: the cloud's Graph resource, not Exchange's.
  const usesGraph = mailbox.inbound.protocol === "graph" || mailbox.outbound === "graph";
  const graphResource = GRAPH_ENDPOINTS[((mailbox.auth as { cloud?: string }).cloud ?? "global") as keyof typeof GRAPH_ENDPOINTS] ?? GRAPH_ENDPOINTS.global;
  const auth = await resolveAuth(mailbox.auth, mailbox.address, env, sanity, v.scope ?? (usesGraph && mailbox.auth.type === "microsoft365" ? `${graphResource}/.default` : undefined));
  const smtpAuth = mailbox.smtp?.auth ? await resolveAuth(mailbox.smtp.auth, mailbox.address, env, sanity, v.scope) : undefined;
  if (!auth || (mailbox.smtp?.auth && !smtpAuth)) return { failed: sanity };
  const inbound = mailbox.inbound;
  const verify = v.insecure === true ? false : inbound.verifyCertificate;
  const port = (tls: string, implicit: number, plain: number) => (tls === "implicit" ? implicit : plain);
  const server = { host: inbound.host, tls: inbound.tls, verifyCertificate: verify };
  return {
    address: mailbox.address,
    auth,
    ...(smtpAuth ? { smtpAuth } : {}),
    ...(inbound.protocol === "imap" ? { imap: { ...server, port: inbound.port ?? port(inbound.tls, 993, 143), folder: inbound.folder } } : {}),
    ...(inbound.protocol === "pop3" ? { pop3: { ...server, port: inbound.port ?? port(inbound.tls, 995, 110) } } : {}),
    ...(usesGraph
      ? {
          graph: {
            endpoint: graphEndpoint(mailbox),
            resource: graphResource,
            user: mailbox.graph.user ?? mailbox.address,
            ...(inbound.protocol === "graph" ? { folder: inbound.folder.toUpperCase() === "INBOX" ? "inbox" : inbound.folder } : {}),
            sending: mailbox.outbound === "graph",
          },
        }
      : {}),
    // With outbound: graph the loaded smtp block only carries limits (its host is Graph's): no SMTP login.
    ...(mailbox.smtp && mailbox.outbound !== "graph"
      ? { smtp: { host: mailbox.smtp.host, port: mailbox.smtp.port ?? (mailbox.smtp.tls === "implicit" ? 465 : mailbox.smtp.tls === "starttls" ? 587 : 25), tls: mailbox.smtp.tls, verifyCertificate: v.insecure === true ? false : mailbox.smtp.verifyCertificate } }
      : {}),
    ...(v["send-to"] ? { sendTo: v["send-to"] } : {}),
    sanity,
  };
}

export async function run(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let values: Values;
  try {
    values = parseArgs({ args: argv, options: OPTIONS, allowPositionals: false }).values;
  } catch (e) {
    process.stderr.write(`postroom test-auth: ${(e as Error).message}\n\n${help}`);
    return EXIT_USAGE;
  }
  if (values.help) {
    process.stdout.write(help);
    return 0;
  }
  // --mailbox without --config: the config of POSTROOM_CONFIG or of the running up/demo, as status finds it.
  if (values.config === undefined && values.mailbox !== undefined && values["tenant-id"] === undefined && values["client-id"] === undefined && values["mailbox-address"] === undefined) {
    const found = commandTarget(undefined, env).config;
    if (found !== undefined) values = { ...values, config: found };
  }
  // Secrets the config refers to may live in the postroom.env beside it, as `up` reads them.
  if (values.config !== undefined) env = { ...readEnvFile(envFileFor(values.config)), ...env };
  let report: TestAuthReport;
  try {
    const envOnly = values["env-only"] === true || (values.config === undefined && values["tenant-id"] === undefined && values["client-id"] === undefined && values["mailbox-address"] === undefined);
    if (envOnly) {
      report = await environmentOnly(values);
      process.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : formatReport(report));
      return report.ok ? 0 : 1;
    }
    const target = values.config !== undefined ? await targetFromConfig(values, env) : targetFromFlags(values, env);
    if ("failed" in target) {
      report = { mailbox: values.mailbox ?? "?", ok: false, steps: target.failed };
    } else {
      const steps = await new AuthChecks(target).run();
      report = { mailbox: target.address, ok: allPassed(steps), steps };
    }
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`postroom test-auth: ${e.message}\n\n${help}`);
      return EXIT_USAGE;
    }
    throw e;
  }
  process.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : formatReport(report));
  return report.ok ? 0 : 1;
}
