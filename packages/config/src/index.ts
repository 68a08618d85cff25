export * from "./schema.js";
export {
  ConfigError,
  parseConfig,
  validateConfig,
  loadConfig,
  loadConfigFile,
  allMailboxes,
  findMailbox,
  archiveSettingsFor,
  formatIssue,
  formatPath,
  toConfigIssues,
} from "./load.js";
export type { ConfigIssue, ConfigValidation, MailboxRef } from "./load.js";
export type { IssueSeverity } from "./issues.js";
export { checkConfig } from "./check.js";
export { redactConfig, redactSecret, redactUrl, REDACTED } from "./redact.js";
export { configJsonSchema, configJsonSchemaText } from "./json-schema.js";
export { resolveSecret, isSecretRef, SecretError } from "./secrets.js";
export { importSoftdial, SoftdialImportError, formatEnvFile, deriveId, SOFTDIAL_EMAIL_FIELDS } from "./softdial/import.js";
export type { SoftdialImport, SoftdialImportOptions } from "./softdial/import.js";
export {
  PROVIDER_NAMES,
  PROVIDER_PRESETS,
  MICROSOFT_DELEGATED_SCOPES,
  GRAPH_ENDPOINTS,
  GRAPH_DELEGATED_SCOPES,
  GOOGLE_MAIL_SCOPES,
  EXCHANGE_BASIC_SMTP_END,
  isExchangeOnlineHost,
  isOutlookComHost,
  isProviderName,
} from "./providers.js";
export type { ProviderName, ProviderPreset, AuthTypeName } from "./providers.js";
