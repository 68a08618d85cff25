import type { Logger } from "pino";

/** Anything a service's main() starts and must stop on SIGTERM. */
export interface Stoppable {
  stop(): Promise<void>;
}

/**
 * The shared shape of every service's main(): start, then wire SIGTERM/SIGINT to one orderly
 * stop. A second signal exits at once. A start-up failure is logged and exits non-zero.
 */
export async function runService(logger: Logger, start: () => Promise<Stoppable>): Promise<void> {
  let service: Stoppable;
  try {
    service = await start();
  } catch (error) {
    logger.fatal({ err: error }, "service failed to start");
    logger.flush?.();
    process.exitCode = 1;
    setTimeout(() => process.exit(1), 100).unref();
    return;
  }
  logger.info("service started");
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn({ signal }, "second signal: exiting now");
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal }, "stopping");
    service
      .stop()
      .then(() => {
        logger.info("stopped");
        logger.flush?.();
        setTimeout(() => process.exit(0), 50).unref();
      })
      .catch((error: unknown) => {
        logger.error({ err: error }, "stop failed");
        process.exit(1);
      });
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
}
