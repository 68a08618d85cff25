export * from "./schema.js";
export {
  ConfigError,
  parseConfig,
  loadConfig,
  loadConfigFile,
  allMailboxes,
  findMailbox,
  archiveSettingsFor,
  formatIssue,
  formatPath,
  toConfigIssues,
} from "./load.js";
export type { ConfigIssue, MailboxRef } from "./load.js";
export { resolveSecret, isSecretRef, SecretError } from "./secrets.js";
