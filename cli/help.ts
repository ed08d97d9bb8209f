/**
 * What `aimesh help`, `aimesh <command> --help` and usage errors print. One entry per
 * command, so the overview and each command's page cannot disagree.
 */
import { AIMESH_VERSION } from '../api/index.js';

/** A command line aimesh cannot run: exit code 2, with a pointer to the command's help. */
export class UsageError extends Error {
  constructor(
    message: string,
    readonly command?: string,
  ) {
    super(message);
  }
}

export interface CommandHelp {
  /** The command line, after `aimesh`. */
  usage: string;
  /** One line for the overview. */
  summary: string;
  /** What a user needs to know to use it: arguments, flags, output, examples. */
  details: string;
}

export const EXIT_CODES = `exit codes:
  0  success
  1  invalid input (a resource failed validation, a file is missing or holds no resources)
     or the command failed
  2  usage error (unknown command or flag, missing argument)`;

const INPUTS = `Inputs are files, folders (searched recursively for .yaml, .yml and .json) or "-" for
standard input; YAML or JSON, several documents per file, and kind: List are accepted.`;

export const COMMANDS: Record<string, CommandHelp> = {
  validate: {
    usage: 'validate <file|folder|->...',
    summary: 'check AiService and Saga resources against the aimesh.io/v1alpha1 schemas',
    details: `Checks each resource with the same rules the API server applies (the CRD schemas and
their CEL rules) and prints one line per resource, with every error under it.

${INPUTS}

examples:
  aimesh validate examples/suoke-life/
  kubectl get aiservices -A -o yaml | aimesh validate -`,
  },
  render: {
    usage: 'render [--out <dir>] [--namespace <ns>] [--sidecar-image <image>] <file|folder|->...',
    summary: 'write the objects the operator would apply, one file per AiService (GitOps)',
    details: `Validates the inputs and writes, for each AiService, exactly the objects the operator
would apply (the same render function and input gathering): <namespace>.<name>.k8s.yaml.
Sagas add their definitions to their orchestrator's sidecar config and their grants to
the step services' policies. Invalid resources are reported and nothing is written for them.

flags:
  --out <dir>               where the files go (default: dist/manifests)
  --namespace <ns>          namespace of resources that name none (default: default)
  --sidecar-image <image>   sidecar image (default: the aimesh image of this version)
  --no-istio                render no Istio policies (for clusters without Istio)

${INPUTS}`,
  },
  operator: {
    usage: 'operator [flags]',
    summary: 'run the controller that reconciles AiServices and Sagas',
    details: `flags:
  --kubeconfig <file>        kubeconfig to use (default: $KUBECONFIG, in-cluster, then ~/.kube/config)
  --namespace <ns>           watch one namespace only (default: all)
  --probe-address <h:p>      /healthz, /readyz and /metrics (default: 0.0.0.0:8081)
  --leader-elect=false       run without leader election (one replica only)
  --lease-namespace <ns>     namespace of the leader Lease (default: $POD_NAMESPACE or default)
  --lease-name <name>        name of the leader Lease (default: aimesh-operator)
  --identity <id>            this replica's name in the Lease (default: $POD_NAME)
  --workers <n>              concurrent reconciles (default: 8)
  --sidecar-image <image>    sidecar image for AiService pods (default: this version's image)

Consul, for every sidecar (an AiService's spec.discovery.consul fields win):
  --consul-address <a>       host:port or https://host:port of a Consul server or agent
                             (default: the agent on each pod's node, $(HOST_IP):8500)
  --consul-datacenter <dc>   datacenter to register in and discover from
  --consul-token-secret <s/k>  ACL token: Secret s, key k, in each AiService's namespace
  --consul-ca-secret <s/k>   CA of the Consul servers (PEM), Secret s, key k
  --consul-tls-server-name <n>  name to verify in the Consul certificate

admission server (sidecar injection; off unless --webhook-address is set):
  --webhook-address <h:p>    where the webhook listens (TLS)
  --webhook-hosts <names>    names and IPs the API server dials it by (comma-separated)
  --webhook-secret <name>    Secret holding its CA and certificate (default: aimesh-webhook-tls)
  --webhook-configuration <name>  MutatingWebhookConfiguration whose caBundle is kept in sync
  --webhook-certificates operator|external  who issues them (external: cert-manager)
  --webhook-cert-check-seconds <n>  how often to check expiry (default: 60)
  --miss-scan-seconds <n>    how often to look for pods without the sidecar (default: 60)`,
  },
  sidecar: {
    usage: 'sidecar --config <file> [flags]',
    summary: 'run the sidecar beside an app (the operator adds it to AiService pods)',
    details: `flags:
  --config <file>             the sidecar config the operator writes (reloaded on change)
  --advertise-address <ip>    address registered in Consul (default: $POD_IP or 127.0.0.1)
  --instance-id <id>          this instance's id (default: $POD_NAME)
  --admin-address <host>      where the admin port listens (default: 0.0.0.0)
  --consul-address <h:p>      Consul agent (default: $CONSUL_HTTP_ADDR)
  --drain-seconds <n>         time in-flight requests get on SIGTERM (default: 10)
  --local-registry <dir>      file registry for discovery.mode: local`,
  },
  run: {
    usage: 'run --config <file> [--registry <dir>] [--drain-seconds <n>] -- <command> [args...]',
    summary: 'run an app and its sidecar on one machine (local registry, no cluster)',
    details: `Starts the sidecar with a config whose discovery.mode is local, then the app with PORT,
AIMESH_OUTBOUND (and OPENAI_BASE_URL when it has providers) in its environment. Apps find
each other in a file registry (default: ~/.aimesh/registry). When the app exits the
sidecar drains and deregisters; the exit code is the app's.`,
  },
  inject: {
    usage: 'inject [--kube-version <v>] [--sidecar-image <image>] [--namespace <ns>] <file|folder|->...',
    summary: 'add the sidecar the injection webhook would add, offline (like istioctl kube-inject)',
    details: `Reads Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs, Pods and Lists
and writes them back to stdout with the same sidecar the webhook adds (a native sidecar
for --kube-version 1.29 and later); other kinds pass through untouched. What was injected
or skipped, and why, goes to stderr. AiServices in the input that adopt a workload
(spec.workload.selector) configure its sidecar; otherwise the pod's aimesh.io/*
annotations do (docs/injection.md).`,
  },
  doctor: {
    usage: 'doctor [--kubeconfig <file>] [--namespace <ns>]',
    summary: 'list pods that should run the aimesh sidecar but do not, why, and the fix',
    details: `Checks the injection webhook's configuration and lists pods in opted-in namespaces
that run without the sidecar (created while the webhook was down, or refused by it),
with the reason and the command that fixes it (kubectl rollout restart ...). Exits 1
when it finds any.`,
  },
  saga: {
    usage: 'saga proto',
    summary: 'print the .proto of the saga gRPC API (port 4703), to generate clients',
    details: 'Prints the protocol buffer definition of the saga control API served on port 4703.',
  },
  crds: {
    usage: 'crds',
    summary: 'print the CustomResourceDefinitions as YAML',
    details: `Prints the AiService and Saga CRDs of this version, e.g.:
  aimesh crds | kubectl apply --server-side -f -`,
  },
  version: {
    usage: 'version',
    summary: 'print the aimesh version (also --version)',
    details: 'Prints the version of this CLI, which is also the version of the image it deploys.',
  },
  help: {
    usage: 'help [command]',
    summary: 'print help for aimesh or one command (also <command> --help)',
    details: 'Prints the list of commands, or the help of one command.',
  },
};

/** The overview: every command with its one-line summary. */
export function overview(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((name) => name.length)) + 2;
  const lines = Object.entries(COMMANDS).map(([name, help]) => `  ${name.padEnd(width)}${help.summary}`);
  return `aimesh ${AIMESH_VERSION}: AiService and Saga resources, their operator, sidecar and manifests

usage: aimesh <command> [arguments]

commands:
${lines.join('\n')}

Run "aimesh <command> --help" for a command's flags and examples.

${EXIT_CODES}
`;
}

/** One command's page, or undefined for a command that does not exist. */
export function commandHelp(command: string): string | undefined {
  const help = COMMANDS[command];
  if (!help) return undefined;
  return `usage: aimesh ${help.usage}

${help.summary}.

${help.details}

${EXIT_CODES}
`;
}
