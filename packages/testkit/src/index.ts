// The real mail servers and process helpers live in @postroom/mail-servers, which `postroom demo`
// uses too; the test kit hands them on so tests keep one import.
export * from "@postroom/mail-servers";
export { startSmtpSink, SmtpSink } from "./smtp-sink.js";
export type {
  SmtpSinkOptions,
  SmtpSinkInfo,
  SmtpUser,
  SmtpMessage,
  SmtpEnvelope,
  SmtpAttempt,
  SmtpStage,
  SmtpReply,
  SmtpReplyContext,
  SmtpReplyHook,
} from "./smtp-sink.js";
export { createTestDatabase, adminDatabaseUrl } from "./database.js";
export { dbRolesInTests, setUpTestDatabaseRoles } from "./database-roles.js";
export type { TestDatabaseRoles } from "./database-roles.js";
export type { TestDatabase } from "./database.js";
export { testNamespace, cleanupNamespace, belongsToNamespace, natsUrl } from "./nats-namespace.js";
export { LineSocket } from "./line-socket.js";
export type { LineSocketOptions } from "./line-socket.js";
export { SoftdialSimulator } from "./softdial-simulator.js";
export { scriptedMail, seededRandom, SCRIPTS, HOSTILE } from "./multilingual-mail.js";
export type { SoftdialSimulatorOptions, SimRoute, SimQueue, SimFrame, SimSession } from "./softdial-simulator.js";
export {
  startFakeIdentityPlatform,
  FakeIdentityPlatform,
  rsaCertificate,
  openIdConfiguration,
  instanceDiscovery,
  EXCHANGE_AUDIENCE,
  ROLE_FOR_SERVICE,
  SCOPE_FOR_SERVICE,
  OUTLOOK_AUDIENCE,
  CONSUMER_TENANT_ID,
  GRAPH_AUDIENCE,
} from "./fake-identity.js";
export type {
  FakeApp,
  FakeServiceAccount,
  FakeIdentityOptions,
  FakeIdentityInfo,
  FakeTokenRequest,
  FakeIntrospection,
  TokenValidation,
  RsaCertificate,
  FakeDeviceCode,
  GraphPermission,
} from "./fake-identity.js";
export { startFakeGraph, FakeGraph } from "./fake-graph.js";
export type { FakeGraphOptions, FakeGraphMailbox, FakeGraphInfo, FakeGraphRequest, FakeGraphSentMail } from "./fake-graph.js";
export { dovecotOAuth2 } from "./dovecot-oauth2.js";
export type { DovecotOAuth2Options, DovecotOAuth2Profile } from "./dovecot-oauth2.js";
export { buildMailCorpus } from "./mail-corpus.js";
export type { CorpusMessage, CorpusExpectation } from "./mail-corpus.js";
export { buildClassifiedCorpus, CORPUS_MAILBOX } from "./classified-corpus.js";
export type { ClassifiedMessage, ClassifiedExpectation, CorpusVerdict } from "./classified-corpus.js";
export { startPrivateNats } from "./private-nats.js";
export type { PrivateNats, PrivateNatsOptions, PrivateNatsTls } from "./private-nats.js";
export { startNatsCluster } from "./nats-cluster.js";
export type { NatsCluster, NatsClusterNode, NatsClusterOptions } from "./nats-cluster.js";
