/**
 * Last-resort cleanup when a test process ends without calling `stop()`/`remove()`.
 *
 * node:test runs every test file in its own process; a test that throws before its `after()` hook
 * registers, or a process killed by the runner's timeout, would otherwise leave a Dovecot listening
 * and a temp folder behind. Only synchronous work is possible here (the `exit` event does not wait
 * for promises), so this kills processes and removes folders, nothing that needs the network
 * (databases and NATS streams are dropped by their own async `drop()`/`cleanupNamespace()`).
 */

type SyncCleanup = () => void;

const pending = new Set<SyncCleanup>();
let installed = false;

function runAll(): void {
  for (const fn of [...pending].reverse()) {
    pending.delete(fn);
    try {
      fn();
    } catch {
      // Best effort: one failed cleanup must not stop the others.
    }
  }
}

function install(): void {
  if (installed) return;
  installed = true;
  process.on("exit", runAll);
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    const onSignal = (): void => {
      // A program with its own handler for this signal (postroom demo stops its services first,
      // then these servers) owns the shutdown; the exit hook above still runs at the end.
      if (process.listenerCount(signal) > 1) return;
      runAll();
      // Re-raise with the default handler so the exit status still says "killed by signal".
      process.off(signal, onSignal);
      process.kill(process.pid, signal);
    };
    process.on(signal, onSignal);
  }
}

/**
 * Registers a synchronous cleanup to run if the process exits first; returns a function that
 * unregisters it (call that from the normal `stop()` path).
 */
export function onProcessExit(fn: SyncCleanup): () => void {
  install();
  pending.add(fn);
  return () => {
    pending.delete(fn);
  };
}
