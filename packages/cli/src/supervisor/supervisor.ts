import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { defaultBackoff, restartDelay, type BackoffOptions } from "./backoff.js";
import { ansi, formatPrefix, renderLogLine, SERVICE_COLOURS } from "./log-format.js";

/** One long-running process the supervisor keeps alive. */
export interface ServiceCommand {
  /** Short name shown in front of every line of its output, e.g. `imap-poller`. */
  name: string;
  /** Executable, e.g. `process.execPath`. */
  command: string;
  /** Arguments, e.g. `["--import", "tsx", "services/archiver/src/main.ts"]`. */
  args: readonly string[];
  /** The child's whole environment; defaults to the supervisor's own. */
  env?: NodeJS.ProcessEnv;
  /** Working directory; defaults to the supervisor's own. */
  cwd?: string;
}

/** Something that happened to a child, for callers (and tests) that want more than the text. */
export type SupervisorEvent =
  | { type: "spawned"; name: string; pid: number }
  | { type: "exited"; name: string; pid: number | undefined; code: number | null; signal: NodeJS.Signals | null; expected: boolean }
  | { type: "restart-scheduled"; name: string; attempt: number; delayMs: number };

/** What a supervisor writes to: a stream with an optional `isTTY`, like `process.stdout`. */
export interface SupervisorOutput {
  write(chunk: string): unknown;
  isTTY?: boolean;
}

/** Options for {@link Supervisor}. */
export interface SupervisorOptions {
  /** The processes to run, in start order. Names must be unique. */
  services: readonly ServiceCommand[];
  /** Where prefixed lines go; defaults to `process.stdout`. */
  output?: SupervisorOutput;
  /** Colour the prefixes and levels; defaults to "output is a terminal and NO_COLOR is unset". */
  colour?: boolean;
  /** How long stop() waits after SIGTERM before it sends SIGKILL. Default 10 s. */
  stopTimeoutMs?: number;
  /** Restart delays for a child that exits on its own. */
  backoff?: BackoffOptions;
  /** A child that ran at least this long before exiting starts its backoff from scratch. Default 30 s. */
  stableAfterMs?: number;
  /** Random source for the backoff's jitter; tests pin it. */
  random?: () => number;
  /** Name in front of the supervisor's own lines. Default `postroom`. */
  selfName?: string;
  /** Called for every {@link SupervisorEvent}. */
  onEvent?: (event: SupervisorEvent) => void;
}

/** A snapshot of one supervised service. */
export interface ServiceStatus {
  /** The service's name. */
  name: string;
  /** PID of the running child, or undefined while it is down. */
  pid: number | undefined;
  /** How many times it was restarted after exiting on its own. */
  restarts: number;
}

interface Managed {
  spec: ServiceCommand;
  prefix: string;
  child: ChildProcess | undefined;
  /** Resolves when the current child has exited and its output has been written. */
  exited: Promise<void>;
  startedAt: number;
  /** Consecutive short-lived runs; drives the backoff. */
  failures: number;
  restarts: number;
  timer: NodeJS.Timeout | undefined;
}

/**
 * Runs a set of child processes with prefixed, human-readable output, restarts the ones that exit
 * on their own with capped exponential backoff, and stops them all on request.
 *
 * Children are started in their own process group (`detached`), so a Ctrl-C in the terminal
 * reaches only the supervisor and it decides the shutdown order; signals go to the whole group so
 * that anything a child started goes with it.
 */
export class Supervisor {
  private readonly options: Required<Omit<SupervisorOptions, "onEvent" | "colour">> & Pick<SupervisorOptions, "onEvent">;
  private readonly colour: boolean;
  private readonly managed: Managed[];
  private readonly selfPrefix: string;
  private stopping = false;
  private stopPromise: Promise<void> | undefined;

  constructor(options: SupervisorOptions) {
    const names = new Set<string>();
    for (const s of options.services) {
      if (names.has(s.name)) throw new Error(`service "${s.name}" is listed twice`);
      names.add(s.name);
    }
    const output = options.output ?? process.stdout;
    this.options = {
      services: options.services,
      output,
      stopTimeoutMs: options.stopTimeoutMs ?? 10_000,
      backoff: options.backoff ?? defaultBackoff,
      stableAfterMs: options.stableAfterMs ?? 30_000,
      random: options.random ?? Math.random,
      selfName: options.selfName ?? "postroom",
      onEvent: options.onEvent,
    };
    this.colour = options.colour ?? (output.isTTY === true && !process.env.NO_COLOR);
    const width = Math.max(this.options.selfName.length, ...options.services.map((s) => s.name.length));
    this.selfPrefix = formatPrefix(this.options.selfName, width, this.colour ? ansi.bold : undefined);
    this.managed = options.services.map((spec, i) => ({
      spec,
      prefix: formatPrefix(spec.name, width, this.colour ? SERVICE_COLOURS[i % SERVICE_COLOURS.length] : undefined),
      child: undefined,
      exited: Promise.resolve(),
      startedAt: 0,
      failures: 0,
      restarts: 0,
      timer: undefined,
    }));
  }

  /** Starts every service. Resolves once each has been spawned (not once it is ready). */
  async start(): Promise<void> {
    if (this.stopping) throw new Error("this supervisor has been stopped; create a new one");
    await Promise.all(this.managed.map((m) => this.spawn(m)));
  }

  /**
   * Stops every service: SIGTERM to each, then SIGKILL to those still running after
   * `stopTimeoutMs`. Pending restarts are cancelled first so nothing comes back while stopping.
   * Calling it again returns the same promise.
   */
  stop(): Promise<void> {
    this.stopPromise ??= this.stopAll();
    return this.stopPromise;
  }

  /** Sends SIGKILL to every running child at once (the second Ctrl-C). stop() still resolves afterwards. */
  kill(): void {
    this.stopping = true;
    for (const m of this.managed) {
      clearTimeout(m.timer);
      m.timer = undefined;
      if (m.child) signal(m.child, "SIGKILL");
    }
  }

  /** Sends `sig` to the named services that are running (a reload: SIGHUP); returns the names signalled. */
  signalServices(sig: NodeJS.Signals, names: readonly string[]): string[] {
    const sent: string[] = [];
    for (const m of this.managed) {
      if (!names.includes(m.spec.name) || !m.child) continue;
      signal(m.child, sig);
      sent.push(m.spec.name);
    }
    return sent;
  }

  /** The current state of every service. */
  status(): ServiceStatus[] {
    return this.managed.map((m) => ({ name: m.spec.name, pid: m.child?.pid, restarts: m.restarts }));
  }

  /** Writes one of the supervisor's own lines, prefixed like the services' lines. */
  log(message: string): void {
    this.options.output.write(`${this.selfPrefix}${message}\n`);
  }

  private async stopAll(): Promise<void> {
    this.stopping = true;
    const running = this.managed.filter((m) => {
      clearTimeout(m.timer);
      m.timer = undefined;
      return m.child !== undefined;
    });
    for (const m of running) if (m.child) signal(m.child, "SIGTERM");
    const all = Promise.all(running.map((m) => m.exited));
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      all.then(() => false),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), this.options.stopTimeoutMs))),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      for (const m of running) {
        if (!m.child) continue;
        this.log(`${m.spec.name} did not stop within ${seconds(this.options.stopTimeoutMs)}; sending SIGKILL`);
        signal(m.child, "SIGKILL");
      }
      await all;
    }
  }

  private spawn(m: Managed): Promise<void> {
    const { spec } = m;
    const child = spawn(spec.command, [...spec.args], {
      cwd: spec.cwd,
      env: spec.env ?? process.env,
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
    m.child = child;
    m.startedAt = Date.now();
    let finished = false;
    let resolveExited: () => void = () => {};
    m.exited = new Promise<void>((resolve) => (resolveExited = resolve));

    const pipe = (stream: NodeJS.ReadableStream | null) => {
      if (!stream) return;
      createInterface({ input: stream, crlfDelay: Infinity }).on("line", (line) => {
        for (const rendered of renderLogLine(line, { colour: this.colour, service: spec.name })) this.options.output.write(`${m.prefix}${rendered}\n`);
      });
    };
    pipe(child.stdout);
    pipe(child.stderr);

    const finish = (code: number | null, sig: NodeJS.Signals | null, error?: Error) => {
      if (finished) return;
      finished = true;
      if (m.child === child) m.child = undefined;
      this.onExit(m, child.pid, code, sig, error);
      resolveExited();
    };
    // 'close' rather than 'exit': it comes after the child's last output line has been read, so
    // "exited" is never printed above the lines that explain why.
    child.on("close", (code, sig) => finish(code, sig));

    return new Promise<void>((resolve) => {
      child.once("spawn", () => {
        if (child.pid !== undefined) this.options.onEvent?.({ type: "spawned", name: spec.name, pid: child.pid });
        resolve();
      });
      child.once("error", (error) => {
        // A child that could not be spawned at all (ENOENT, EACCES) never emits 'spawn'.
        if (child.pid === undefined) finish(null, null, error);
        resolve();
      });
    });
  }

  private onExit(m: Managed, pid: number | undefined, code: number | null, sig: NodeJS.Signals | null, error?: Error): void {
    const expected = this.stopping;
    this.options.onEvent?.({ type: "exited", name: m.spec.name, pid, code, signal: sig, expected });
    const how = error ? `could not start: ${error.message}` : describeExit(code, sig);
    if (expected) {
      this.log(`${m.spec.name} stopped (${how})`);
      return;
    }
    const ranFor = Date.now() - m.startedAt;
    // Only a run that proved stable resets the backoff; a crash loop keeps growing the delay.
    if (ranFor >= this.options.stableAfterMs) m.failures = 0;
    m.failures++;
    const delayMs = restartDelay(m.failures, this.options.backoff, this.options.random);
    this.log(`${m.spec.name} exited unexpectedly (${how}) after ${seconds(ranFor)}; restarting in ${seconds(delayMs)} (attempt ${m.failures})`);
    this.options.onEvent?.({ type: "restart-scheduled", name: m.spec.name, attempt: m.failures, delayMs });
    m.timer = setTimeout(() => {
      m.timer = undefined;
      if (this.stopping) return;
      m.restarts++;
      void this.spawn(m);
    }, delayMs);
  }
}

/** Signals the child's whole process group, falling back to the child alone. */
function signal(child: ChildProcess, sig: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, sig);
  } catch {
    // The group is gone already, or the child is not a group leader.
    try {
      child.kill(sig);
    } catch {
      // Already exited.
    }
  }
}

function describeExit(code: number | null, sig: NodeJS.Signals | null): string {
  if (sig) return `signal ${sig}`;
  return `exit code ${code ?? "unknown"}`;
}

function seconds(ms: number): string {
  return ms < 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 1000)} s`;
}
