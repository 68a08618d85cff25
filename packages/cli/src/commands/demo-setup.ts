/**
 * What `postroom demo`, `demo send` and `demo inbox` share: where the demo keeps its things, the
 * generated config, the secrets, and the customer emails it seeds. Pure apart from the small file
 * helpers at the end.
 */
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { chmod, readFile, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { deflateSync } from "node:zlib";
import { formatEnvFile } from "@postroom/config";
import { readEnvFile } from "./secrets-preflight.js";

/** The demo's tenant and addresses. `.test` is reserved (RFC 2606): no mail can leak out. */
export const DEMO = {
  tenant: "demo",
  support: "support@demo.postroom.test",
  sales: "sales@demo.postroom.test",
  customer: "alex@customer.test",
  customerName: "Alex Customer",
} as const;

/** The demo's agents; bob is a supervisor (the "Queues now" view). */
export const DEMO_AGENTS = [
  { id: "ann", name: "Ann Agent", env: "DEMO_ANN_PASSWORD", supervisor: false },
  { id: "bob", name: "Bob Supervisor", env: "DEMO_BOB_PASSWORD", supervisor: true },
] as const;

/** Variables in the demo's postroom.env. */
export const DEMO_SECRETS = ["DEMO_SUPPORT_PASSWORD", "DEMO_SALES_PASSWORD", "DEMO_CUSTOMER_PASSWORD", ...DEMO_AGENTS.map((a) => a.env)] as const;

/** Files and folders under the demo's folder (default `.postroom/demo`). */
export interface DemoPaths {
  dir: string;
  config: string;
  envFile: string;
  /** demo.json: ports and addresses of the running demo, for `demo send` / `demo inbox`. */
  info: string;
  dovecot: string;
  postfix: string;
  /** The CA certificates of the demo's Dovecot and Postfix, for NODE_EXTRA_CA_CERTS. */
  caBundle: string;
  /** Present once the customer emails were delivered: they are seeded once, not on every start. */
  seeded: string;
}

export function demoPaths(dir: string): DemoPaths {
  const d = resolve(dir);
  return {
    dir: d,
    config: join(d, "postroom.yaml"),
    envFile: join(d, "postroom.env"),
    info: join(d, "demo.json"),
    dovecot: join(d, "dovecot"),
    postfix: join(d, "postfix"),
    caBundle: join(d, "ca.pem"),
    seeded: join(d, "seeded"),
  };
}

/** The nearest `.postroom/demo` from `cwd` upwards that holds a demo.json, or undefined. */
export function findDemoDir(cwd: string): string | undefined {
  for (let dir = resolve(cwd); ; dir = dirname(dir)) {
    const candidate = join(dir, ".postroom", "demo");
    if (existsSync(join(candidate, "demo.json"))) return candidate;
    if (dirname(dir) === dir) return undefined;
  }
}

/** What the running demo writes to demo.json. */
export interface DemoInfo {
  host: string;
  imapPort: number;
  pop3Port: number;
  submissionPort: number;
  caBundle: string;
  desktopUrl: string;
  /** The database and namespace this demo generation uses. */
  database: string;
  namespace: string;
}

/** Ports and names the config is generated from. */
export interface DemoConfigParams {
  imapPort: number;
  pop3Port: number;
  submissionPort: number;
  desktopPort: number;
  /** Database name, e.g. postroom_demo_1a2b3c: a new one after every --reset. */
  database: string;
  /** NATS namespace, e.g. demo-1a2b3c. */
  namespace: string;
}

/**
 * The demo's postroom.yaml: one tenant, support over IMAP and sales over POP3 (both STARTTLS,
 * certificates checked against the demo's own CA), replies through the local Postfix with
 * STARTTLS, the built-in ACD with two agents. Rewritten at every start, since the mail servers'
 * ports are chosen free each time.
 */
export function demoConfigYaml(p: DemoConfigParams): string {
  return `# Written by \`postroom demo\` at every start; edits are overwritten. Copy it to make your own.
# Secrets are in postroom.env beside this file. The ports are the demo's local Dovecot and Postfix.
version: 1
nats:
  url: nats://127.0.0.1:4222       # or a nats-server postroom starts itself
  namespace: ${p.namespace}
database:
  url: postgres://postgres@127.0.0.1:5432/${p.database}   # or an embedded PostgreSQL under this folder
archive:
  path: ./archive
  warnPercentLeft: 20
agentApi:
  host: 127.0.0.1
  port: ${p.desktopPort}
tenants:
  - id: ${DEMO.tenant}
    name: Postroom demo
    acd: { type: builtin }
    agents:
${DEMO_AGENTS.map((a) => `      - { id: ${a.id}, name: ${a.name}, password: "env:${a.env}", queues: [email], maxSessions: 20${a.supervisor ? ", supervisor: true" : ""} }`).join("\n")}
    mailboxes:
      - id: support
        name: Customer support
        address: ${DEMO.support}
        inbound: { protocol: imap, host: 127.0.0.1, port: ${p.imapPort}, tls: starttls, checkIntervalSeconds: 5 }
        auth: { type: password, password: "env:DEMO_SUPPORT_PASSWORD" }
        smtp: { host: 127.0.0.1, port: ${p.submissionPort}, tls: starttls }
        routing: { defaultQueue: email }
      - id: sales
        name: Sales
        address: ${DEMO.sales}
        inbound: { protocol: pop3, host: 127.0.0.1, port: ${p.pop3Port}, tls: starttls, checkIntervalSeconds: 5 }
        auth: { type: password, password: "env:DEMO_SALES_PASSWORD" }
        smtp: { host: 127.0.0.1, port: ${p.submissionPort}, tls: starttls }
        routing: { defaultQueue: email }
`;
}

/** Reads the demo's secrets, making (and saving, mode 0600) any that are missing. */
export async function demoSecrets(envFile: string): Promise<Record<string, string>> {
  const existing = readEnvFile(envFile);
  const secrets: Record<string, string> = {};
  let changed = false;
  for (const name of DEMO_SECRETS) {
    const value = existing[name];
    if (value) secrets[name] = value;
    else {
      // Short enough to type from the printed box; random so no two demos share one.
      secrets[name] = randomBytes(9).toString("base64url");
      changed = true;
    }
  }
  if (changed) {
    await writeFile(envFile, formatEnvFile(secrets, "Secrets of `postroom demo` (local test servers only). postroom up reads this file."), { mode: 0o600 });
    await chmod(envFile, 0o600);
  }
  return secrets;
}

export async function writeDemoInfo(path: string, info: DemoInfo): Promise<void> {
  await writeFile(path, `${JSON.stringify(info, null, 2)}\n`);
}

export async function readDemoInfo(path: string): Promise<DemoInfo> {
  return JSON.parse(await readFile(path, "utf8")) as DemoInfo;
}

/** The database/namespace suffix of this demo folder's generation, made once per folder. */
export function demoGeneration(dir: string, existing?: string): string {
  if (existing) return existing;
  const file = join(dir, "generation");
  return existsSync(file) ? readFileSync(file, "utf8").trim() : randomBytes(3).toString("hex");
}

/** CRC-32 of PNG chunks (zlib.crc32 needs Node 22). */
function crc32(data: Buffer): number {
  let c = ~0;
  for (const byte of data) {
    c ^= byte;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1;
  }
  return ~c >>> 0;
}

/** A small solid-colour PNG, the inline image of the seeded HTML email (made, not shipped). */
export function solidPng(size = 48, rgb: [number, number, number] = [47, 91, 211]): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const head = Buffer.alloc(4);
    head.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, "ascii"), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([head, body, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(size, 0);
  ihdr.writeUInt32BE(size, 4);
  ihdr.set([8, 2, 0, 0, 0], 8); // 8-bit RGB
  const row = Buffer.concat([Buffer.from([0]), Buffer.from(Array.from({ length: size }, () => rgb).flat())]);
  const pixels = deflateSync(Buffer.concat(Array.from({ length: size }, () => row)));
  return Buffer.concat([Buffer.from("89504e470d0a1a0a", "hex"), chunk("IHDR", ihdr), chunk("IDAT", pixels), chunk("IEND", Buffer.alloc(0))]);
}

/** One email the demo's customer sends, in nodemailer's terms. */
export interface SeedMail {
  to: string;
  subject: string;
  text: string;
  html?: string;
  messageId: string;
  inReplyTo?: string;
  references?: string[];
  headers?: Record<string, string>;
  attachments?: Array<{ filename: string; content: Buffer; contentType: string; cid?: string }>;
  /** Shown to people: what this email demonstrates. */
  shows: string;
}

/** The customer emails delivered on the demo's first start, in order. */
export function seedMails(): SeedMail[] {
  const id = (local: string) => `<${local}@customer.test>`;
  const thread = [id("address-1"), id("address-2")];
  return [
    {
      shows: "a plain question",
      to: DEMO.support,
      subject: "Where is my order #10427?",
      messageId: id("order-10427"),
      text: "Hello,\n\nI ordered a kettle (order #10427) ten days ago and it has not arrived yet.\nCould you tell me where it is?\n\nThanks,\nAlex",
    },
    {
      shows: "HTML with an inline image and an attachment",
      to: DEMO.support,
      subject: "Damaged parcel - photo and invoice attached",
      messageId: id("damaged-parcel"),
      text: "Hello,\n\nMy parcel arrived with the box crushed; a photo is in this email and the invoice is attached.\n\nAlex",
      html: '<p>Hello,</p><p>My parcel arrived with the <b>box crushed</b>. Here is a photo:</p><p><img src="cid:photo@customer.test" alt="photo of the parcel" width="120" height="120"></p><p>The invoice is attached.</p><p>Alex</p>',
      attachments: [
        { filename: "parcel.png", content: solidPng(), contentType: "image/png", cid: "photo@customer.test" },
        { filename: "invoice-10388.pdf", content: Buffer.from("%PDF-1.4\n% Postroom demo invoice 10388\n%%EOF\n"), contentType: "application/pdf" },
      ],
    },
    {
      shows: "a thread (first message)",
      to: DEMO.support,
      subject: "Change of delivery address",
      messageId: thread[0]!,
      text: "Hello,\n\nI am moving next week. Can you send order #10502 to 4 Harbour Road instead?\n\nAlex",
    },
    {
      shows: "a thread (second message)",
      to: DEMO.support,
      subject: "Re: Change of delivery address",
      messageId: thread[1]!,
      inReplyTo: thread[0]!,
      references: [thread[0]!],
      text: "Sorry, I forgot: the flat number is 12.\n\nAlex",
    },
    {
      shows: "a thread with two earlier messages",
      to: DEMO.support,
      subject: "Re: Change of delivery address",
      messageId: id("address-3"),
      inReplyTo: thread[1]!,
      references: thread,
      text: "Is the change confirmed? The order page still shows the old address.\n\nAlex",
    },
    {
      shows: "an auto-reply (archived, not offered to agents)",
      to: DEMO.support,
      subject: "Automatic reply: Out of office",
      messageId: id("out-of-office"),
      headers: { "Auto-Submitted": "auto-replied", "X-Auto-Response-Suppress": "All" },
      text: "I am out of the office until Monday and will answer your message then.",
    },
    {
      shows: "a POP3 mailbox",
      to: DEMO.sales,
      subject: "Quote for 40 office chairs",
      messageId: id("chairs-quote"),
      text: "Hello,\n\nCould you send me a quote for 40 of your ergonomic office chairs, delivered in March?\n\nAlex",
    },
  ];
}

/** The subjects an agent sees as sessions once the seed mails are in (the auto-reply is not offered). */
export function offeredSeedSubjects(): string[] {
  return seedMails()
    .filter((m) => !m.headers?.["Auto-Submitted"])
    .map((m) => m.subject);
}

/** The one printed box: fixed width, long lines wrapped at spaces. */
export function box(lines: string[], width = 78): string {
  const inner = width - 4;
  const wrapped: string[] = [];
  for (const line of lines) {
    if (line.length <= inner) {
      wrapped.push(line);
      continue;
    }
    let rest = line;
    const indent = /^\s*/.exec(line)![0] + "  ";
    while (rest.length > inner) {
      const cut = rest.lastIndexOf(" ", inner);
      const at = cut > indent.length ? cut : inner;
      wrapped.push(rest.slice(0, at));
      rest = indent + rest.slice(at).trimStart();
    }
    wrapped.push(rest);
  }
  return [`┌${"─".repeat(width - 2)}┐`, ...wrapped.map((l) => `│ ${l.padEnd(inner)} │`), `└${"─".repeat(width - 2)}┘`].join("\n") + "\n";
}

/** The running demo's files, for `demo send` / `demo inbox`; undefined (and a message printed) when there is none. */
export async function openDemo(command: string, dataDir: string | undefined): Promise<{ paths: DemoPaths; info: DemoInfo; customerPassword: string } | undefined> {
  const dir = dataDir ?? findDemoDir(process.cwd());
  if (!dir || !existsSync(join(dir, "demo.json"))) {
    process.stderr.write(`postroom ${command}: no demo here (no .postroom/demo/demo.json in this folder or above)\n  fix: start one with \`pnpm postroom demo\`\n`);
    return undefined;
  }
  const paths = demoPaths(dir);
  return { paths, info: await readDemoInfo(paths.info), customerPassword: readEnvFile(paths.envFile).DEMO_CUSTOMER_PASSWORD ?? "" };
}
