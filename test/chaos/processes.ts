import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, type WriteStream } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { serviceCommand, type ServiceName } from "../support/system.js";

const ROOT = resolve(fileURLToPath(new URL("../..", import.meta.url)));

/** Why a process ended: by the harness (a fault or the final stop), or by itself. */
export interface ExitRecord {
  name: string;
  at: number;
  code: number | null;
  signal: string | null;
  planned: boolean;
  lastLines: string[];
}

/**
 * One service replica as a process (PostroomSystem runs one per service; the chaos run needs two
 * pollers, two archivers and two senders). Its output goes to a log file of its own, read at the
 * end for secrets, and the last lines stay in memory for the report. A process that ends is started
 * again after a pause, as Kubernetes restarts a container; exits the harness did not cause are
 * recorded, since a service that dies by itself under faults is a finding.
 */
export class ServiceProcess {
  #child: ChildProcess | undefined;
  #log: WriteStream;
  #tail: string[] = [];
  #planned = false;
  #stopping = false;
  #stopped = false;
  #restartTimer: NodeJS.Timeout | undefined;
  starts = 0;

  constructor(
    readonly name: string,
    readonly service: ServiceName,
    private readonly o: { configPath: string; env: Record<string, string>; logDir: string; restartDelayMs: () => number; onExit: (e: ExitRecord) => void },
  ) {
    this.#log = createWriteStream(join(o.logDir, `${name}.log`), { flags: "a" });
  }

  get logPath(): string {
    return join(this.o.logDir, `${this.name}.log`);
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  running(): boolean {
    return this.#child !== undefined;
  }

  start(): void {
    if (this.#child || this.#stopped) return;
    this.starts++;
    // From source through tsx, or the built dist/ with POSTROOM_E2E_COMPILED=1 (as CI runs it).
    const child = spawn(process.execPath, serviceCommand(this.service), {
      cwd: ROOT,
      env: { ...process.env, ...this.o.env, POSTROOM_CONFIG: this.o.configPath, LOG_LEVEL: "info" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.#child = child;
    let partial = "";
    const collect = (d: Buffer) => {
      this.#log.write(d);
      const lines = (partial + d.toString("utf8")).split("\n");
      partial = lines.pop() ?? "";
      for (const l of lines) if (l.trim()) this.#tail.push(l);
      if (this.#tail.length > 40) this.#tail.splice(0, this.#tail.length - 40);
    };
    child.stdout!.on("data", collect);
    child.stderr!.on("data", collect);
    child.once("exit", (code, signal) => {
      this.#child = undefined;
      const planned = this.#planned || this.#stopping;
      this.#planned = false;
      this.o.onExit({ name: this.name, at: Date.now(), code, signal, planned, lastLines: this.#tail.slice(-8) });
      if (!this.#stopping) this.#restartTimer = setTimeout(() => this.start(), this.o.restartDelayMs());
    });
  }

  /** A fault: the signal is sent; the process is started again by the exit handler. */
  kill(signal: NodeJS.Signals): void {
    if (!this.#child) return;
    this.#planned = true;
    this.#child.kill(signal);
  }

  /** SIGSTOP or SIGCONT. */
  signal(signal: "SIGSTOP" | "SIGCONT"): void {
    this.#child?.kill(signal);
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    this.#stopped = true;
    clearTimeout(this.#restartTimer);
    const child = this.#child;
    if (child) {
      const gone = new Promise<void>((r) => child.once("exit", () => r()));
      child.kill("SIGCONT");
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 15_000);
      await gone;
      clearTimeout(t);
    }
    await new Promise<void>((r) => this.#log.end(() => r()));
  }

  tail(n = 8): string[] {
    return this.#tail.slice(-n);
  }
}
