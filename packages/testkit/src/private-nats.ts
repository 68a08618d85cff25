import { writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { join } from "node:path";
import { findBinary, freePort, spawnDaemon, tempDir, waitFor, type Daemon, type TempDir } from "@postroom/mail-servers";

/** TLS for a private nats-server: its certificate and key, and the CA whose client certificates it verifies. */
export interface PrivateNatsTls {
  certPath: string;
  keyPath: string;
  /** With `verify: true`, clients must present a certificate signed by this CA. */
  caPath?: string;
  verify?: boolean;
}

export interface PrivateNatsOptions {
  /** nats-server's `authorization { ... }` block, as configuration text (e.g. contracts' natsAuthorizationBlock). */
  authorization?: string;
  tls?: PrivateNatsTls;
}

/** A nats-server 2.9 with JetStream of one test's own: its own port, store and configuration. */
export interface PrivateNats {
  /** `nats://127.0.0.1:<port>` (`tls://` when TLS is on). */
  url: string;
  port: number;
  /** Lines in which the server refused a publish or a subscription (`Permissions Violation`). */
  violations(): string[];
  /** Everything the server logged. */
  output(): string;
  stop(): Promise<void>;
}

/**
 * Starts a private nats-server (the one on PATH; nats-server here is 2.9.x) on a free loopback
 * port with JetStream in a temporary folder, optionally with users and permissions and TLS, so a
 * test can prove what a configuration allows and refuses. The shared server on 4222 stays open.
 */
export async function startPrivateNats(options: PrivateNatsOptions = {}): Promise<PrivateNats> {
  const dir: TempDir = tempDir("nats");
  const port = await freePort();
  const tls = options.tls
    ? `tls {\n  cert_file: "${options.tls.certPath}"\n  key_file: "${options.tls.keyPath}"\n${options.tls.caPath ? `  ca_file: "${options.tls.caPath}"\n` : ""}  verify: ${options.tls.verify ? "true" : "false"}\n  timeout: 5\n}\n`
    : "";
  const config = `listen: "127.0.0.1:${port}"\nserver_name: "private-${port}"\njetstream {\n  store_dir: "${join(dir.path, "js")}"\n  max_memory_store: 64MB\n  max_file_store: 1GB\n}\n${tls}${options.authorization ?? ""}\n`;
  const configPath = join(dir.path, "nats.conf");
  await writeFile(configPath, config);
  const daemon: Daemon = spawnDaemon({ command: findBinary("nats-server", "POSTROOM_NATS_SERVER_BIN"), args: ["-c", configPath], outputPath: join(dir.path, "nats.log") });
  // nats-server opens the client port only after JetStream is up, so an accepted connection is "ready".
  await waitFor(
    () =>
      daemon.running()
        ? new Promise<boolean>((resolve) => {
            const socket = connect(port, "127.0.0.1", () => {
              socket.destroy();
              resolve(true);
            }).once("error", () => resolve(false));
          })
        : Promise.reject(new Error(`nats-server exited:\n${daemon.output()}\n--- config ---\n${config}`)),
    { timeoutMs: 15_000, what: `private nats-server on ${port}` },
  );
  return {
    url: `${options.tls ? "tls" : "nats"}://127.0.0.1:${port}`,
    port,
    violations: () => daemon.output().split("\n").filter((l) => /Permissions Violation/.test(l)),
    output: () => daemon.output(),
    async stop() {
      await daemon.stop();
      await dir.remove();
    },
  };
}
