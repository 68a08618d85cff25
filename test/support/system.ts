import { spawn, type ChildProcess } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { PostroomConfigInput } from "@postroom/config";
import { stringify } from "yaml";

export const SERVICES = ["token-service", "imap-poller", "archiver", "asd-bridge", "smtp-sender"] as const;
export type ServiceName = (typeof SERVICES)[number];

const ROOT = resolve(fileURLToPath(new URL("../..", import.meta.url)));

/**
 * How to start a service: its built dist/main.js when the e2e runner has compiled the services
 * (POSTROOM_E2E_COMPILED=1, as production runs them and without tsx compiling at every start), else
 * its sources through tsx, so one file runs straight after an edit.
 */
export function serviceCommand(name: ServiceName, nodeArgs: readonly string[] = []): string[] {
  return process.env.POSTROOM_E2E_COMPILED === "1"
    ? [...nodeArgs, join(ROOT, "services", name, "dist", "main.js")]
    : [...nodeArgs, "--conditions=source", "--import", "tsx", join(ROOT, "services", name, "src", "main.ts")];
}

export interface SystemOptions {
  /** Written as YAML to a file in `dir` and passed as POSTROOM_CONFIG. */
  config: PostroomConfigInput;
  dir: string;
  /** Extra environment (secrets referenced as env:NAME). */
  env?: Record<string, string>;
}

/**
 * The whole system as real processes, started the way `postroom up` and Kubernetes start them,
 * so tests can stop, kill and restart one service while the others keep running.
 */
export class PostroomSystem {
  readonly #children = new Map<ServiceName, ChildProcess>();
  /** Every line every service printed, for assertions and for failure reports. */
  readonly logs: { service: ServiceName; line: string }[] = [];
  #configPath = "";

  constructor(private readonly o: SystemOptions) {}

  async start(services: readonly ServiceName[] = SERVICES): Promise<void> {
    this.#configPath = join(this.o.dir, "postroom.yaml");
    await writeFile(this.#configPath, stringify(this.o.config));
    for (const s of services) this.startService(s);
  }

  /**
   * Changes the configuration file the services read (e.g. to raise an archive quota). Services
   * read it at start, so restart the ones that must see the change.
   */
  async rewriteConfig(change: (config: PostroomConfigInput) => void): Promise<void> {
    change(this.o.config);
    this.#configPath ||= join(this.o.dir, "postroom.yaml");
    await writeFile(this.#configPath, stringify(this.o.config));
  }

  /** `extraEnv` applies to this start only (e.g. a crash test's failpoint). */
  startService(name: ServiceName, extraEnv: Record<string, string> = {}): void {
    if (this.#children.has(name)) throw new Error(`${name} is already running`);
    const child = spawn(process.execPath, serviceCommand(name), {
      cwd: ROOT,
      env: { ...process.env, ...this.o.env, ...extraEnv, POSTROOM_CONFIG: this.#configPath, LOG_LEVEL: process.env.LOG_LEVEL ?? "info" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    // A chunk may end in the middle of a line: keep the tail until its newline arrives, so tests
    // that look for a log line never see it cut in two.
    const collector = () => {
      let partial = "";
      return (data: Buffer) => {
        const lines = (partial + data.toString("utf8")).split("\n");
        partial = lines.pop() ?? "";
        for (const line of lines) if (line.trim()) this.logs.push({ service: name, line });
      };
    };
    child.stdout!.on("data", collector());
    child.stderr!.on("data", collector());
    child.once("exit", () => this.#children.delete(name));
    this.#children.set(name, child);
  }

  /** SIGTERM (orderly stop) or SIGKILL (crash); resolves when the process is gone. */
  async stopService(name: ServiceName, signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    const child = this.#children.get(name);
    if (!child) return;
    const gone = new Promise<void>((r) => child.once("exit", () => r()));
    child.kill(signal);
    const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
    await gone;
    clearTimeout(timer);
    this.#children.delete(name);
  }

  /** The process id of a running service (for memory readings), undefined when it is not running. */
  pid(name: ServiceName): number | undefined {
    return this.#children.get(name)?.pid;
  }

  running(name: ServiceName): boolean {
    return this.#children.has(name);
  }

  async stop(): Promise<void> {
    await Promise.all([...this.#children.keys()].map((s) => this.stopService(s)));
  }

  /** The logs as text, for a failing assertion's message. */
  dump(lastLines = 80): string {
    return this.logs.slice(-lastLines).map((l) => `${l.service}: ${l.line}`).join("\n");
  }
}
