import { execFile, execFileSync } from "node:child_process";
import { chmod, chown, copyFile, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { freePort, onProcessExit, tempDir, type TempDir } from "@postroom/testkit";
import pg from "pg";

const run = promisify(execFile);
const BIN = process.env.POSTROOM_PG_BIN ?? "/usr/lib/postgresql/15/bin";

/**
 * A PostgreSQL cluster of this test's own (initdb + pg_ctl in a temp folder, on a free loopback
 * port), so a test can stop and start "the database" without touching the shared server other
 * test runs use. As root, the cluster runs as the `postgres` user (PostgreSQL refuses root).
 */
export class PrivatePostgres {
  #dir!: TempDir;
  #data = "";
  #port = 0;
  #unregister: (() => void) | undefined;
  #tls = false;

  get url(): string {
    return `postgres://postgres@127.0.0.1:${this.#port}/postroom`;
  }

  /**
   * `tls`: serve TLS with this certificate and key, and accept TCP connections only over TLS
   * (pg_hba `hostssl`), so a client that does not use TLS is refused.
   */
  static async create(options: { tls?: { certPath: string; keyPath: string } } = {}): Promise<PrivatePostgres> {
    const p = new PrivatePostgres();
    p.#dir = tempDir("private-pg");
    p.#data = join(p.#dir.path, "data");
    p.#port = await freePort();
    await mkdir(p.#data);
    if (process.getuid?.() === 0) {
      const { stdout } = await run("id", ["-u", "postgres"]);
      const { stdout: gid } = await run("id", ["-g", "postgres"]);
      await chmod(p.#dir.path, 0o711);
      await chown(p.#data, Number(stdout.trim()), Number(gid.trim()));
    }
    await p.#pg("initdb", ["-D", p.#data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"]);
    if (options.tls) {
      p.#tls = true;
      // PostgreSQL wants its key private to its own user.
      await copyFile(options.tls.certPath, join(p.#data, "server.crt"));
      await copyFile(options.tls.keyPath, join(p.#data, "server.key"));
      await chmod(join(p.#data, "server.key"), 0o600);
      const hba = join(p.#data, "pg_hba.conf");
      await writeFile(hba, (await readFile(hba, "utf8")).replace(/^host(\s)/gm, "hostssl$1"));
      if (process.getuid?.() === 0) {
        const { stdout } = await run("id", ["-u", "postgres"]);
        const { stdout: gid } = await run("id", ["-g", "postgres"]);
        for (const f of ["server.crt", "server.key", "pg_hba.conf"]) await chown(join(p.#data, f), Number(stdout.trim()), Number(gid.trim()));
      }
    }
    await p.start();
    // Never leave a postmaster behind, whatever happens to the test.
    p.#unregister = onProcessExit(() => {
      const stop = [join(BIN, "pg_ctl"), "-D", p.#data, "stop", "-m", "immediate"];
      try {
        if (process.getuid?.() === 0) execFileSync("runuser", ["-u", "postgres", "--", ...stop], { stdio: "ignore" });
        else execFileSync(stop[0]!, stop.slice(1), { stdio: "ignore" });
      } catch {
        // Already stopped.
      }
    });
    // The fixture's own set-up connection; what a test checks is its own clients' verification.
    const admin = new pg.Client({ connectionString: p.url.replace(/\/postroom$/, "/postgres"), ...(p.#tls ? { ssl: { rejectUnauthorized: false } } : {}) });
    await admin.connect();
    await admin.query("CREATE DATABASE postroom");
    await admin.end();
    return p;
  }

  async start(): Promise<void> {
    await this.#pg("pg_ctl", [
      "-D", this.#data, "-w", "-t", "60", "-l", join(this.#data, "server.log"),
      "-o", `-p ${this.#port} -k ${this.#data} -c listen_addresses=127.0.0.1 -c fsync=off${this.#tls ? " -c ssl=on" : ""}`,
      "start",
    ]);
  }

  /** Stops the server (fast: clients are disconnected, as in a restart or failover). */
  async stop(): Promise<void> {
    await this.#pg("pg_ctl", ["-D", this.#data, "-w", "stop", "-m", "fast"]);
  }

  async remove(): Promise<void> {
    await this.#pg("pg_ctl", ["-D", this.#data, "-w", "stop", "-m", "immediate"]).catch(() => undefined);
    this.#unregister?.();
    await this.#dir?.remove();
  }

  async #pg(binary: string, args: string[]): Promise<void> {
    const bin = join(BIN, binary);
    if (process.getuid?.() === 0) await run("runuser", ["-u", "postgres", "--", bin, ...args]);
    else await run(bin, args);
  }
}
