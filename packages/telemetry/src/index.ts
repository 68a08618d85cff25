export { createLogger, errorFields, REDACTED_PATHS } from "./logger.js";
export type { Logger, LoggerOptions } from "./logger.js";
export { runService } from "./lifecycle.js";
export type { Stoppable } from "./lifecycle.js";
