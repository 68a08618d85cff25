export { dispatch, usage, EXIT_USAGE } from "./dispatch.js";
export type { CommandEntry, CommandModule, CommandTable } from "./dispatch.js";
