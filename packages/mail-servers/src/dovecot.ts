import { execFile } from "node:child_process";
import { chmod, chown, mkdir, readFile, rename, utimes, writeFile } from "node:fs/promises";
import { readFileSync } from "node:fs";
import { userInfo } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { ImapFlow } from "imapflow";
import { selfSignedCertificate } from "./certificate.js";
import { findBinary, readGreeting, spawnDaemon, tail, type Daemon } from "./daemon.js";
import { freePorts } from "./ports.js";
import { keptDir, tempDir, type TempDir } from "./temp-dir.js";
import type { TestServer } from "./test-server.js";
import { waitFor } from "./wait-for.js";

const run = promisify(execFile);

/** A mailbox login in the test Dovecot's passwd-file. */
export interface DovecotUser {
  /** Login name, usually an address (`support@example.test`). No ":" allowed. */
  user: string;
  /** Plain password; any characters (stored base64-encoded). */
  password: string;
}

/** Options for {@link startDovecot}. */
export interface DovecotOptions {
  /** Users present from the start. */
  users?: DovecotUser[];
  /** Also listen for implicit TLS (IMAPS, POP3S) with a self-signed certificate; needs openssl. */
  ssl?: boolean;
  /** Also listen for LMTP on a loopback port (for Postfix delivery); needs dovecot-lmtpd. */
  lmtp?: boolean;
  /** SASL mechanisms offered (default `["plain", "login"]`). */
  authMechanisms?: string[];
  /**
   * Appended verbatim to the generated dovecot.conf: e.g. an `passdb { driver = oauth2 ... }` block.
   * Passdbs added here are consulted after the passwd-file one.
   */
  extraConfig?: string;
  /** Path of the dovecot binary (default: PATH, /usr/sbin, or POSTROOM_DOVECOT_BIN). */
  binary?: string;
  /** How long to wait for the listeners (default 15 s). */
  startTimeoutMs?: number;
  /** Keep config, Maildirs and log in this folder, kept after stop() (default: a temp folder, removed). */
  dir?: string;
  /** Run Dovecot in its own process group (see SpawnDaemonOptions.detached). */
  detached?: boolean;
}

/** How to reach a running test Dovecot. */
export interface DovecotInfo {
  /** Always 127.0.0.1. */
  host: string;
  /** Plain-text IMAP (STARTTLS offered only when `ssl` is on). */
  imapPort: number;
  /** Plain-text POP3. */
  pop3Port: number;
  /** IMAP over implicit TLS, when `ssl` is on. */
  imapsPort?: number;
  /** POP3 over implicit TLS, when `ssl` is on. */
  pop3sPort?: number;
  /** LMTP, when `lmtp` is on. */
  lmtpPort?: number;
  /** PEM certificate clients must trust, when `ssl` is on. */
  caCertPath?: string;
  /** Dovecot's log (logins, disconnects, auth failures): read it for connection audits. */
  logPath: string;
  /** The generated configuration file. */
  configPath: string;
  /** The temp folder holding config, passwd-file, Maildirs and runtime sockets. */
  dir: string;
}

/** Options for {@link DovecotServer.appendMessage}. */
export interface AppendOptions {
  /** IMAP flags, e.g. `["\\Seen"]`. */
  flags?: string[];
  /** Folder (default INBOX); created if missing. */
  folder?: string;
  /** INTERNALDATE (default now). */
  internalDate?: Date;
}

/** Who the Dovecot processes run as: see README "Running Dovecot as root". */
interface RunAs {
  internalUser: string;
  loginUser: string;
  mailUid: number;
  mailGid: number;
  root: boolean;
}

function runAs(): RunAs {
  const me = userInfo();
  if (me.uid !== 0) {
    // Unprivileged: Dovecot cannot switch users, so everything runs as the caller.
    return { internalUser: me.username, loginUser: me.username, mailUid: me.uid, mailGid: me.gid, root: false };
  }
  // As root: internal processes (auth, config) may be root; login processes refuse root
  // ("This process must not be run as root"); mail processes refuse uid 0 ("userdb returned 0 as
  // uid"). "nobody" exists on every Debian/Ubuntu/Alpine, unlike "dovecot"/"dovenull" before the
  // package is configured, so it serves for both.
  let uid = 65534;
  let gid = 65534;
  try {
    const line = readFileSync("/etc/passwd", "utf8")
      .split("\n")
      .find((l) => l.startsWith("nobody:"));
    const [, , u, g] = line?.split(":") ?? [];
    if (u !== undefined && g !== undefined) {
      uid = Number(u);
      gid = Number(g);
    }
  } catch {
    // keep 65534
  }
  return { internalUser: "root", loginUser: "nobody", mailUid: uid, mailGid: gid, root: true };
}

/** Parameters of {@link dovecotConfig}. */
export interface DovecotConfigParams {
  dir: string;
  imapPort: number;
  pop3Port: number;
  imapsPort?: number;
  pop3sPort?: number;
  lmtpPort?: number;
  certPath?: string;
  keyPath?: string;
  authMechanisms: string[];
  internalUser: string;
  loginUser: string;
  mailUid: number;
  mailGid: number;
  chrootLogin: boolean;
  extraConfig?: string;
}

/** The dovecot.conf text for one test instance (pure; exported so other fixtures can reuse it). */
export function dovecotConfig(p: DovecotConfigParams): string {
  const ssl = p.certPath !== undefined && p.keyPath !== undefined;
  const protocols = ["imap", "pop3", ...(p.lmtpPort === undefined ? [] : ["lmtp"])];
  const chroot = p.chrootLogin ? "" : "\n  chroot =";
  return `# Generated by @postroom/testkit for one test; not for production.
protocols = ${protocols.join(" ")}
listen = 127.0.0.1
base_dir = ${p.dir}/run
state_dir = ${p.dir}/state
instance_name = postroom-test
log_path = ${p.dir}/dovecot.log
auth_verbose = yes
auth_mechanisms = ${p.authMechanisms.join(" ")}
# Failed logins answer at once: the default 2 s delay makes negative tests slow.
auth_failure_delay = 0
disable_plaintext_auth = no
ssl = ${ssl ? "yes" : "no"}
${ssl ? `ssl_cert = <${p.certPath}\nssl_key = <${p.keyPath}\n` : ""}
default_internal_user = ${p.internalUser}
default_internal_group = ${p.internalUser === "root" ? "root" : p.internalUser}
default_login_user = ${p.loginUser}
mail_uid = ${p.mailUid}
mail_gid = ${p.mailGid}
first_valid_uid = ${Math.min(p.mailUid, 500)}
first_valid_gid = ${Math.min(p.mailGid, 500)}
mail_location = maildir:~/Maildir

namespace inbox {
  inbox = yes
  separator = /
}

passdb {
  driver = passwd-file
  args = username_format=%u ${p.dir}/passwd
}
userdb {
  driver = static
  args = uid=${p.mailUid} gid=${p.mailGid} home=${p.dir}/mail/%u
}

service imap-login {${chroot}
  inet_listener imap {
    port = ${p.imapPort}
  }
  inet_listener imaps {
    port = ${p.imapsPort ?? 0}
    ssl = yes
  }
}
service pop3-login {${chroot}
  inet_listener pop3 {
    port = ${p.pop3Port}
  }
  inet_listener pop3s {
    port = ${p.pop3sPort ?? 0}
    ssl = yes
  }
}
${
  p.lmtpPort === undefined
    ? ""
    : `service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = ${p.lmtpPort}
  }
}
`
}
# No per-IP penalty after failed logins (2 s, 4 s ... 15 s): negative tests would slow the rest.
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
${p.extraConfig ?? ""}
`;
}

/** A passwd-file line; the password is base64 so ":" and newlines in it cannot break the file. */
function passwdLine(u: DovecotUser): string {
  if (/[:\n\r]/.test(u.user) || u.user === "") throw new Error(`Dovecot user name "${u.user}" may not be empty or contain ":" or newlines`);
  return `${u.user}:{PLAIN.b64}${Buffer.from(u.password, "utf8").toString("base64")}::::::\n`;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * A real Dovecot (IMAP + POP3, optionally IMAPS/POP3S and LMTP) on free loopback ports, with its own
 * config, passwd-file and Maildirs in a temp folder. Start it with {@link startDovecot}.
 */
export class DovecotServer implements TestServer<DovecotInfo> {
  readonly name = "dovecot";
  private readonly options: DovecotOptions;
  private readonly accounts = new Map<string, string>();
  private dirHandle: TempDir | undefined;
  private daemon: Daemon | undefined;
  private current: DovecotInfo | undefined;
  /** Last mtime (whole seconds) given to the passwd-file; see `writePasswd`. */
  private passwdMtime = 0;

  constructor(options: DovecotOptions = {}) {
    this.options = options;
    for (const u of options.users ?? []) this.accounts.set(u.user, u.password);
  }

  /** Connection info; throws before `start()`. */
  get info(): DovecotInfo {
    if (this.current === undefined) throw new Error("Dovecot is not started");
    return this.current;
  }

  async start(): Promise<DovecotInfo> {
    if (this.current !== undefined) return this.current;
    const binary = this.options.binary ?? findBinary("dovecot", "POSTROOM_DOVECOT_BIN");
    const dir = this.options.dir === undefined ? tempDir("dovecot") : keptDir(this.options.dir);
    this.dirHandle = dir;
    try {
      const who = runAs();
      // mkdtemp makes 0700; the login and mail processes (nobody) must traverse it.
      await chmod(dir.path, 0o711);
      await mkdir(join(dir.path, "mail"), { recursive: true });
      await mkdir(join(dir.path, "state"), { recursive: true });
      if (who.root) await chown(join(dir.path, "mail"), who.mailUid, who.mailGid);
      await this.writePasswd();
      const cert = this.options.ssl === true ? await selfSignedCertificate(dir.path) : undefined;

      // A port picked free can be taken before Dovecot binds it; try again with fresh ports.
      let lastError: unknown;
      for (let attempt = 1; attempt <= 3; attempt++) {
        const [imapPort, pop3Port, imapsPort, pop3sPort, lmtpPort] = await freePorts(5);
        const params: DovecotConfigParams = {
          dir: dir.path,
          imapPort: imapPort!,
          pop3Port: pop3Port!,
          authMechanisms: this.options.authMechanisms ?? ["plain", "login"],
          internalUser: who.internalUser,
          loginUser: who.loginUser,
          mailUid: who.mailUid,
          mailGid: who.mailGid,
          chrootLogin: who.root,
          ...(cert === undefined ? {} : { imapsPort, pop3sPort, certPath: cert.certPath, keyPath: cert.keyPath }),
          ...(this.options.lmtp === true ? { lmtpPort } : {}),
          ...(this.options.extraConfig === undefined ? {} : { extraConfig: this.options.extraConfig }),
        };
        const configPath = join(dir.path, "dovecot.conf");
        await writeFile(configPath, dovecotConfig(params));
        const info: DovecotInfo = {
          host: "127.0.0.1",
          imapPort: params.imapPort,
          pop3Port: params.pop3Port,
          logPath: join(dir.path, "dovecot.log"),
          configPath,
          dir: dir.path,
          ...(cert === undefined ? {} : { imapsPort: params.imapsPort!, pop3sPort: params.pop3sPort!, caCertPath: cert.certPath }),
          ...(params.lmtpPort === undefined ? {} : { lmtpPort: params.lmtpPort }),
        };
        const daemon = spawnDaemon({ command: binary, args: ["-F", "-c", configPath], outputPath: join(dir.path, "dovecot.out"), detached: this.options.detached ?? false });
        this.daemon = daemon;
        try {
          await this.waitUntilListening(info, daemon);
          this.current = info;
          return info;
        } catch (error) {
          lastError = error;
          await daemon.stop();
          this.daemon = undefined;
          const log = this.readLogSafe(info.logPath) + daemon.output();
          if (!/Address already in use|duplicate listener/.test(log)) break;
        }
      }
      throw lastError;
    } catch (error) {
      await this.stop();
      throw error;
    }
  }

  private async waitUntilListening(info: DovecotInfo, daemon: Daemon): Promise<void> {
    const listeners: Array<[string, number | undefined, string]> = [
      ["IMAP", info.imapPort, "* OK"],
      ["POP3", info.pop3Port, "+OK"],
      ["LMTP", info.lmtpPort, "220"],
    ];
    const timeoutMs = this.options.startTimeoutMs ?? 15_000;
    for (const [what, port, expect] of listeners) {
      if (port === undefined) continue;
      try {
        await waitFor(
          async () => {
            if (!daemon.running()) throw new Error(`dovecot exited (${await daemon.exited})`);
            const greeting = await readGreeting(info.host, port);
            if (!greeting.startsWith(expect)) throw new Error(`unexpected greeting "${greeting}"`);
            return true;
          },
          { timeoutMs, intervalMs: 50, what: `Dovecot ${what} on port ${port}` },
        );
      } catch (error) {
        throw new Error(
          `Dovecot did not start: ${(error as Error).message}\n--- ${info.logPath}:\n${tail(this.readLogSafe(info.logPath))}\n--- output:\n${tail(daemon.output())}`,
          { cause: error },
        );
      }
    }
  }

  private readLogSafe(path: string): string {
    try {
      return readFileSync(path, "utf8");
    } catch {
      return "";
    }
  }

  /**
   * Stops Dovecot and starts it again on the same ports, configuration and Maildirs, as an
   * operator's restart would: clients are disconnected, the mail stays. Resolves once every
   * listener greets again.
   */
  async restart(): Promise<void> {
    const info = this.info;
    const old = this.daemon;
    this.daemon = undefined;
    if (old !== undefined) await old.stop();
    const binary = this.options.binary ?? findBinary("dovecot", "POSTROOM_DOVECOT_BIN");
    // The old login processes may hold the ports for a moment after the master has gone: start
    // again until the listeners bind (up to 30 s).
    const until = Date.now() + 30_000;
    for (;;) {
      const daemon = spawnDaemon({ command: binary, args: ["-F", "-c", info.configPath], outputPath: join(info.dir, "dovecot.out"), detached: this.options.detached ?? false });
      this.daemon = daemon;
      try {
        await this.waitUntilListening(info, daemon);
        return;
      } catch (error) {
        await daemon.stop();
        this.daemon = undefined;
        if (Date.now() > until || !/Address already in use/.test(String((error as Error).message))) throw error;
        await sleep(500);
      }
    }
  }

  async stop(): Promise<void> {
    // Dovecot first (it writes into the folder), then the folder.
    const daemon = this.daemon;
    this.daemon = undefined;
    this.current = undefined;
    if (daemon !== undefined) await daemon.stop();
    const dir = this.dirHandle;
    this.dirHandle = undefined;
    if (dir !== undefined) await dir.remove();
  }

  /** The log so far (logins, disconnects, auth failures). */
  async readLog(): Promise<string> {
    return readFile(this.info.logPath, "utf8");
  }

  /** Current users and passwords. */
  users(): DovecotUser[] {
    return [...this.accounts].map(([user, password]) => ({ user, password }));
  }

  /**
   * Adds a user or changes a password. Dovecot re-reads the passwd-file at most once a second, so by
   * default this waits until the change is visible to new logins (up to about 1.1 s).
   */
  async setUser(user: string, password: string, options: { waitForReload?: boolean } = {}): Promise<void> {
    passwdLine({ user, password }); // validate before changing state
    this.accounts.set(user, password);
    await this.writePasswd(options.waitForReload ?? true);
  }

  /** Removes a user (its Maildir stays); waits like {@link setUser}. */
  async removeUser(user: string, options: { waitForReload?: boolean } = {}): Promise<void> {
    this.accounts.delete(user);
    await this.writePasswd(options.waitForReload ?? true);
  }

  private async writePasswd(waitForReload = false): Promise<void> {
    const dir = this.dirHandle?.path;
    if (dir === undefined) return;
    const path = join(dir, "passwd");
    const text = [...this.accounts].map(([user, password]) => passwdLine({ user, password })).join("");
    // Write-and-rename so the auth process never reads half a file. Dovecot notices a change by the
    // file's mtime/size, with one-second resolution: give every version a strictly later whole-second
    // mtime, or a same-length password change within one second would go unnoticed.
    await writeFile(`${path}.tmp`, text, { mode: 0o600 });
    const nowSec = Math.floor(Date.now() / 1000);
    this.passwdMtime = Math.max(nowSec, this.passwdMtime + 1);
    await utimes(`${path}.tmp`, this.passwdMtime, this.passwdMtime);
    await rename(`${path}.tmp`, path);
    if (waitForReload && this.current !== undefined) {
      // The auth process stats the file at most once per wall-clock second (its ioloop time): a
      // login in the second after the rename is the first one sure to see the new file.
      const target = (Math.floor(Date.now() / 1000) + 1) * 1000 + 50;
      await sleep(Math.max(0, target - Date.now()));
    }
  }

  /** A logged-in imapflow client for `user` (plain text, loopback). Call `logout()` when done. */
  async imapClient(user: string): Promise<ImapFlow> {
    const password = this.accounts.get(user);
    if (password === undefined) throw new Error(`Dovecot has no user "${user}"`);
    const client = new ImapFlow({
      host: this.info.host,
      port: this.info.imapPort,
      secure: false,
      doSTARTTLS: false,
      auth: { user, pass: password },
      logger: false,
    });
    await client.connect();
    return client;
  }

  /** Runs `fn` with a logged-in client and logs out afterwards, also on error. */
  async withImap<T>(user: string, fn: (client: ImapFlow) => Promise<T>): Promise<T> {
    const client = await this.imapClient(user);
    try {
      return await fn(client);
    } finally {
      await client.logout().catch(() => client.close());
    }
  }

  /** Stores a raw message in `user`'s folder with IMAP APPEND; returns its UID and UIDVALIDITY. */
  async appendMessage(user: string, raw: string | Buffer, options: AppendOptions = {}): Promise<{ uid: number; uidValidity: bigint }> {
    const folder = options.folder ?? "INBOX";
    return this.withImap(user, async (client) => {
      if (folder.toUpperCase() !== "INBOX") await client.mailboxCreate(folder);
      const result = await client.append(folder, raw, options.flags ?? [], options.internalDate);
      if (result === false || result.uid === undefined || result.uidValidity === undefined) {
        throw new Error(`APPEND to ${folder} for ${user} returned no APPENDUID`);
      }
      return { uid: result.uid, uidValidity: result.uidValidity };
    });
  }

  /**
   * UID → flags (sorted) of every message in a folder. `\Recent` is left out: it depends on which
   * session looked first, so it is noise in assertions.
   */
  async flagsOf(user: string, folder = "INBOX"): Promise<Map<number, string[]>> {
    return this.withImap(user, async (client) => {
      const lock = await client.getMailboxLock(folder, { readOnly: true });
      try {
        const result = new Map<number, string[]>();
        const exists = client.mailbox === false ? 0 : client.mailbox.exists;
        if (exists === 0) return result;
        for (const msg of await client.fetchAll("1:*", { uid: true, flags: true })) {
          result.set(msg.uid, [...(msg.flags ?? [])].filter((f) => f !== "\\Recent").sort());
        }
        return result;
      } finally {
        lock.release();
      }
    });
  }

  /** The folder's UIDVALIDITY. */
  async uidValidity(user: string, folder = "INBOX"): Promise<bigint> {
    return this.withImap(user, async (client) => {
      const status = await client.status(folder, { uidValidity: true });
      if (status === false || status.uidValidity === undefined) throw new Error(`no UIDVALIDITY for ${folder}`);
      return status.uidValidity;
    });
  }

  /**
   * Replaces a folder by a new one with a different UIDVALIDITY, as a server does when a mailbox is
   * rebuilt or moved: clients must treat every UID they knew as void. By default the messages come
   * back (same bytes, flags and dates, new UIDs); `keepMessages: false` leaves the folder empty.
   *
   * INBOX cannot be deleted over IMAP, so INBOX is emptied and its UIDVALIDITY changed with
   * `doveadm mailbox update`; other folders are really deleted and created, and bumped the same way
   * if Dovecot happened to reuse the old value (it derives UIDVALIDITY from the clock).
   */
  async recreateFolder(user: string, folder = "INBOX", options: { keepMessages?: boolean } = {}): Promise<{ before: bigint; after: bigint }> {
    const isInbox = folder.toUpperCase() === "INBOX";
    const saved = await this.withImap(user, async (client) => {
      const lock = await client.getMailboxLock(folder);
      try {
        const exists = client.mailbox === false ? 0 : client.mailbox.exists;
        const messages =
          exists === 0 || options.keepMessages === false
            ? []
            : await client.fetchAll("1:*", { uid: true, flags: true, internalDate: true, source: true });
        if (isInbox && exists > 0) await client.messageDelete("1:*");
        return messages.map((m) => ({
          source: m.source ?? Buffer.alloc(0),
          flags: [...(m.flags ?? [])].filter((f) => f !== "\\Recent"),
          internalDate: m.internalDate instanceof Date ? m.internalDate : undefined,
        }));
      } finally {
        lock.release();
      }
    });
    const before = await this.uidValidity(user, folder);
    if (!isInbox) {
      await this.withImap(user, async (client) => {
        await client.mailboxDelete(folder);
        await client.mailboxCreate(folder);
      });
    }
    let after = await this.uidValidity(user, folder);
    if (after === before) {
      after = (before % 0xffffffffn) + 1n;
      await this.doveadm(["mailbox", "update", "-u", user, "--uid-validity", String(after), folder]);
    }
    for (const m of saved) {
      await this.withImap(user, (client) => client.append(folder, m.source, m.flags, m.internalDate));
    }
    return { before, after: await this.uidValidity(user, folder) };
  }

  /** Runs `doveadm -c <this config> ...args` and returns its stdout (e.g. `["mailbox", "list", "-u", user]`). */
  async doveadm(args: string[]): Promise<string> {
    const doveadm = findBinary("doveadm", "POSTROOM_DOVEADM_BIN");
    const { stdout } = await run(doveadm, ["-c", this.info.configPath, ...args]);
    return stdout;
  }
}

/** Starts a real Dovecot on free loopback ports (see {@link DovecotServer}); `stop()` it when done. */
export async function startDovecot(options: DovecotOptions = {}): Promise<DovecotServer> {
  const server = new DovecotServer(options);
  await server.start();
  return server;
}
