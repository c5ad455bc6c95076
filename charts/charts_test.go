package charts

import (
	"flag"
	"fmt"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	"helm.sh/helm/v3/pkg/releaseutil"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/validation"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	"github.com/eryx-dev/eryx/auth"
)

const (
	chartPath   = "eryx"
	releaseName = "test"
	namespace   = "eryx-system"
	// kubeVersion is the cluster version rendered for. Helm built with
	// `go run` (no release ldflags) would otherwise assume v1.20.
	kubeVersion = "v1.31.0"
)

// printManifests shows what each scenario renders, as `helm template`
// would: go test ./charts -run 'TestChartRender/defaults' -v -args -print
var printManifests = flag.Bool("print", false, "log the rendered manifests")

// scenario is one set of values the chart must lint, render and decode.
type scenario struct {
	name   string
	values string // YAML, over values.yaml
	check  func(t *testing.T, m *manifests)
}

var scenarios = []scenario{
	{name: "defaults", check: checkDefaults},
	{
		name: "eryx-auth with the in-chart NATS",
		values: `
nats: {enabled: true, auth: {mode: token, token: eryx_0123456789ab_workerkey}}
worker: {subjectPrefix: acme.eryx}
auth:
  enabled: true
  password: authpw
  issuerSeed: SAAXXXX
  issuerPublicKey: ABJHLOVMPA4CI6R5KLNGOB4GSLNIY7IOUPAJC4YFNDLQVIOBYQGUWVLA
`,
		check: checkAuth,
	},
	{
		name: "all options",
		values: `
replicaCount: 3
image:
  digest: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
imagePullSecrets: [{name: regcred}]
priorityClassName: batch-high
nodeSelector: {kubernetes.io/arch: amd64}
tolerations: [{key: dedicated, operator: Equal, value: eryx, effect: NoSchedule}]
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector: {matchLabels: {app.kubernetes.io/component: worker}}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: ScheduleAnyway
    labelSelector: {matchLabels: {app.kubernetes.io/component: worker}}
podAnnotations: {example.com/team: data}
podLabels: {team: data}
worker:
  queue: gpu-free
  poolSize: 8
  execTimeoutSeconds: 300
  drainTimeoutSeconds: 330
  memoryLimit: 512MiB
  logLevel: debug
  extraEnv: [{name: ERYX_EXTRA, value: "1"}]
  extraEnvFrom: [{configMapRef: {name: eryx-extra}}]
terminationGracePeriodSeconds: 360
network:
  allowHosts: [api.example.com, 203.0.113.0/24]
  allowPorts: [443, 8443]
  maxConnections: 16
  connectTimeout: 5s
  maxBytesIn: 128MiB
  allowPrivate: true
  extraCA: {secretName: corp-ca}
otel:
  endpoint: http://otel-collector.observability:4317
  protocol: grpc
  sampler: parentbased_traceidratio
  samplerArg: "0.25"
  resourceAttributes: deployment.environment=prod
dataVolume: {medium: Memory, sizeLimit: 1Gi}
autoscaling: {enabled: false}
podDisruptionBudget: {maxUnavailable: "", minAvailable: "50%"}
serviceMonitor:
  enabled: true
  labels: {release: prometheus}
networkPolicy:
  enabled: true
  metricsFrom: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]
  extraEgress:
    - to: [{ipBlock: {cidr: 203.0.113.0/24}}]
      ports: [{port: 443, protocol: TCP}]
nats:
  enabled: true
  auth: {mode: token, token: s3cret}
  persistence: {storageClassName: fast}
`,
		check: checkAllOptions,
	},
	{
		name: "existing secret, user and password",
		values: `
nats:
  url: nats://nats-0.nats:4222,nats://nats-1.nats:4222
  auth:
    mode: userPassword
    existingSecret: my-nats
    secretKeys: {user: username, password: pass}
`,
		check: func(t *testing.T, m *manifests) {
			if n := len(m.secrets); n != 0 {
				t.Errorf("rendered %d Secrets with existingSecret set", n)
			}
			env := envOf(m.worker().Spec.Template.Spec.Containers[0])
			wantSecretRef(t, env, "ERYX_NATS_USER", "my-nats", "username")
			wantSecretRef(t, env, "ERYX_NATS_PASSWORD", "my-nats", "pass")
			// The worker takes user and password in the URL: each URL gets
			// them as references the kubelet expands from the Secret.
			const want = "nats://$(ERYX_NATS_USER):$(ERYX_NATS_PASSWORD)@nats-0.nats:4222," +
				"nats://$(ERYX_NATS_USER):$(ERYX_NATS_PASSWORD)@nats-1.nats:4222"
			if got := env["ERYX_NATS_URL"].Value; got != want {
				t.Errorf("ERYX_NATS_URL = %q, want %q", got, want)
			}
		},
	},
	{
		name: "embedded NATS, one pod",
		values: `
replicaCount: 1
autoscaling: {enabled: false}
worker: {embeddedListen: "0.0.0.0:4222"}
nats: {url: ""}
`,
		check: func(t *testing.T, m *manifests) {
			env := envOf(m.worker().Spec.Template.Spec.Containers[0])
			if _, ok := env["ERYX_NATS_URL"]; ok {
				t.Error("ERYX_NATS_URL set in embedded mode")
			}
			if got := env["ERYX_EMBEDDED_LISTEN"].Value; got != "0.0.0.0:4222" {
				t.Errorf("ERYX_EMBEDDED_LISTEN = %q", got)
			}
			if !strings.Contains(m.notes, "embedded NATS server") {
				t.Error("NOTES.txt does not mention the embedded server")
			}
		},
	},
	{
		name: "creds file",
		values: `
nats:
  auth: {mode: creds, existingSecret: nats-user-creds}
`,
		check: func(t *testing.T, m *manifests) {
			pod := m.worker().Spec.Template.Spec
			env := envOf(pod.Containers[0])
			path := env["ERYX_NATS_CREDS"].Value
			var vol *corev1.Volume
			for i := range pod.Volumes {
				if s := pod.Volumes[i].Secret; s != nil && s.SecretName == "nats-user-creds" {
					vol = &pod.Volumes[i]
				}
			}
			if vol == nil {
				t.Fatal("no volume from Secret nats-user-creds")
			}
			mounted := false
			for _, vm := range pod.Containers[0].VolumeMounts {
				if vm.Name == vol.Name && filepath.Join(vm.MountPath, vol.Secret.Items[0].Path) == path && vm.ReadOnly {
					mounted = true
				}
			}
			if !mounted {
				t.Errorf("ERYX_NATS_CREDS=%q is not the read-only mounted creds file", path)
			}
		},
	},
}

// TestChartLint runs what `helm lint` runs, for each scenario's values.
func TestChartLint(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			linter := lint.All(chartPath, parseValues(t, sc.values), namespace, false)
			for _, msg := range linter.Messages {
				if msg.Severity >= support.WarningSev {
					t.Errorf("helm lint: %s", msg)
				}
			}
		})
	}
}

// TestChartRender renders each scenario as `helm template` would, decodes
// every manifest strictly into its typed Kubernetes object (an unknown or
// misspelt field, a wrong type or an unknown kind fails), checks the
// objects' references to each other, then the scenario's own properties.
func TestChartRender(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			rendered, err := render(t, sc.values)
			if err != nil {
				t.Fatal(err)
			}
			if *printManifests {
				for _, file := range slices.Sorted(maps.Keys(rendered)) {
					t.Logf("# Source: %s\n%s", file, rendered[file])
				}
			}
			m := decode(t, rendered)
			checkConsistency(t, m)
			sc.check(t, m)
		})
	}
}

// TestChartRejectsBadValues: values.schema.json and the templates' own
// checks refuse configurations that could not work.
func TestChartRejectsBadValues(t *testing.T) {
	tests := []struct {
		name, values, wantErr string
	}{
		{"misspelt key", "replicas: 3", "additional properties 'replicas' not allowed"},
		{"wrong type", "replicaCount: two", "replicaCount"},
		{"empty pool", "worker: {poolSize: 0}", "poolSize"},
		{"queue with a dot", "worker: {queue: a.b}", "queue"},
		{"unknown auth mode", "nats: {auth: {mode: kerberos}}", "mode"},
		{"bad pull policy", "image: {pullPolicy: Sometimes}", "pullPolicy"},
		{"port out of range", "network: {allowPorts: [70000]}", "allowPorts"},
		{"host list in one string", "network: {allowHosts: ['a.com,b.com']}", "allowHosts"},
		{"json protocol", "otel: {protocol: http/json}", "protocol"},
		{"bad digest", "image: {digest: latest}", "digest"},
		{"bad size", "dataVolume: {sizeLimit: lots}", "sizeLimit"},
		{"bad timeout", "network: {ioTimeout: forever}", "ioTimeout"},
		{"grace shorter than drain", "terminationGracePeriodSeconds: 30", "must exceed the drain timeout"},
		{"drain shorter than exec", "worker: {execTimeoutSeconds: 120, drainTimeoutSeconds: 60}", "must exceed worker.execTimeoutSeconds"},
		{"creds with in-chart nats", "nats: {enabled: true, auth: {mode: creds, creds: x}}", "not supported by the in-chart NATS"},
		{"token missing", "nats: {auth: {mode: token}}", "nats.auth.token is required"},
		{"both PDB bounds", "podDisruptionBudget: {maxUnavailable: 1, minAvailable: 1}", "only one of"},
		{"HPA min above max", "autoscaling: {minReplicas: 5, maxReplicas: 2}", "must not exceed"},
		{"embedded NATS with autoscaling", "nats: {url: ''}", "only works with one pod"},
		{"embedded NATS with replicas", "nats: {url: ''}\nautoscaling: {enabled: false}\nreplicaCount: 2", "only works with one pod"},
		{"credentials in the URL", "nats: {url: 'nats://u:p@nats:4222'}", "url"},
		{"password needing escapes", "nats: {auth: {mode: userPassword, user: u, password: 'p@ss/word'}}", "may only contain"},
		{"memory in Kubernetes units", "worker: {memoryLimit: 256Mi}", "memoryLimit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := render(t, tc.values)
			if err == nil {
				t.Fatalf("values %q rendered", tc.values)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q does not mention %q", err, tc.wantErr)
			}
		})
	}
}

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	ch, err := loader.Load(chartPath)
	if err != nil {
		t.Fatalf("load chart: %v", err)
	}
	return ch
}

func parseValues(t *testing.T, y string) map[string]any {
	t.Helper()
	vals, err := chartutil.ReadValues([]byte(y))
	if err != nil {
		t.Fatalf("values: %v", err)
	}
	return vals
}

// render is `helm template`: coalesce and schema-validate the values, then
// run the templates in strict mode, where referencing a value that
// values.yaml does not define is an error rather than an empty string.
func render(t *testing.T, values string) (map[string]string, error) {
	t.Helper()
	return renderFor(t, values, kubeVersion)
}

// renderFor renders for a cluster of version kube ("" is Helm's built-in
// default, as `helm template` without --kube-version).
func renderFor(t *testing.T, values, kube string) (map[string]string, error) {
	t.Helper()
	ch := loadChart(t)
	caps := *chartutil.DefaultCapabilities
	if kube != "" {
		kv, err := chartutil.ParseKubeVersion(kube)
		if err != nil {
			t.Fatal(err)
		}
		caps.KubeVersion = *kv
	}
	// What `helm template` and `helm install` check before rendering.
	if c := ch.Metadata.KubeVersion; c != "" && !chartutil.IsCompatibleRange(c, caps.KubeVersion.String()) {
		return nil, fmt.Errorf("chart requires kubeVersion: %s which is incompatible with Kubernetes %s", c, caps.KubeVersion.String())
	}
	vals, err := chartutil.ToRenderValues(ch, parseValues(t, values),
		chartutil.ReleaseOptions{Name: releaseName, Namespace: namespace, Revision: 1, IsInstall: true},
		&caps)
	if err != nil {
		return nil, err
	}
	return engine.Engine{Strict: true}.Render(ch, vals)
}

// manifests are the decoded objects of one rendering.
type manifests struct {
	all             []runtime.Object
	deployments     []*appsv1.Deployment
	statefulSets    []*appsv1.StatefulSet
	services        []*corev1.Service
	secrets         []*corev1.Secret
	configMaps      []*corev1.ConfigMap
	serviceAccounts []*corev1.ServiceAccount
	hpas            []*autoscalingv2.HorizontalPodAutoscaler
	pdbs            []*policyv1.PodDisruptionBudget
	netpols         []*networkingv1.NetworkPolicy
	serviceMonitors []*monitoringv1.ServiceMonitor
	notes           string
}

func (m *manifests) worker() *appsv1.Deployment {
	var workers []*appsv1.Deployment
	for _, d := range m.deployments {
		if d.Spec.Template.Labels["app.kubernetes.io/component"] == "worker" {
			workers = append(workers, d)
		}
	}
	if len(workers) != 1 {
		panic(fmt.Sprintf("%d worker Deployments rendered, want 1", len(workers)))
	}
	return workers[0]
}

func decode(t *testing.T, rendered map[string]string) *manifests {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := monitoringv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	// EnableStrict: unknown and duplicate fields are errors, as with
	// `kubectl apply --validate=strict`.
	deser := serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()

	m := &manifests{}
	for _, file := range slices.Sorted(maps.Keys(rendered)) {
		body := rendered[file]
		if strings.HasSuffix(file, "NOTES.txt") {
			m.notes = body
			continue
		}
		if !strings.HasSuffix(file, ".yaml") {
			continue
		}
		docs := releaseutil.SplitManifests(body)
		for _, key := range slices.Sorted(maps.Keys(docs)) {
			doc := docs[key]
			if strings.TrimSpace(doc) == "" {
				continue
			}
			obj, gvk, err := deser.Decode([]byte(doc), nil, nil)
			if err != nil {
				t.Fatalf("%s: %v\n%s", file, err, doc)
			}
			meta, err := metaOf(obj)
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			if errs := validation.IsDNS1123Subdomain(meta.GetName()); len(errs) > 0 {
				t.Errorf("%s %s: invalid name: %v", gvk.Kind, meta.GetName(), errs)
			}
			if meta.GetNamespace() != namespace {
				t.Errorf("%s %s: namespace %q, want %q", gvk.Kind, meta.GetName(), meta.GetNamespace(), namespace)
			}
			for k, v := range meta.GetLabels() {
				if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
					t.Errorf("%s %s: label %s=%q: %v", gvk.Kind, meta.GetName(), k, v, errs)
				}
			}
			m.all = append(m.all, obj)
			switch o := obj.(type) {
			case *appsv1.Deployment:
				m.deployments = append(m.deployments, o)
			case *appsv1.StatefulSet:
				m.statefulSets = append(m.statefulSets, o)
			case *corev1.Service:
				m.services = append(m.services, o)
			case *corev1.Secret:
				m.secrets = append(m.secrets, o)
			case *corev1.ConfigMap:
				m.configMaps = append(m.configMaps, o)
			case *corev1.ServiceAccount:
				m.serviceAccounts = append(m.serviceAccounts, o)
			case *autoscalingv2.HorizontalPodAutoscaler:
				m.hpas = append(m.hpas, o)
			case *policyv1.PodDisruptionBudget:
				m.pdbs = append(m.pdbs, o)
			case *networkingv1.NetworkPolicy:
				m.netpols = append(m.netpols, o)
			case *monitoringv1.ServiceMonitor:
				m.serviceMonitors = append(m.serviceMonitors, o)
			default:
				t.Errorf("%s: unexpected kind %s", file, gvk.Kind)
			}
		}
	}
	if len(m.all) == 0 {
		t.Fatal("nothing rendered")
	}
	return m
}

func metaOf(obj runtime.Object) (metav1.Object, error) {
	o, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%T has no object metadata", obj)
	}
	return o, nil
}

// podTemplates are the workloads' pod templates, by workload name.
func (m *manifests) podTemplates() map[string]*corev1.PodTemplateSpec {
	pods := map[string]*corev1.PodTemplateSpec{}
	for _, d := range m.deployments {
		pods["Deployment/"+d.Name] = &d.Spec.Template
	}
	for _, s := range m.statefulSets {
		pods["StatefulSet/"+s.Name] = &s.Spec.Template
	}
	return pods
}

func selects(t *testing.T, sel *metav1.LabelSelector, pod *corev1.PodTemplateSpec) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatalf("selector %v: %v", sel, err)
	}
	return !s.Empty() && s.Matches(labels.Set(pod.Labels))
}

func podPorts(pod *corev1.PodTemplateSpec) map[string]int32 {
	ports := map[string]int32{}
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			ports[p.Name] = p.ContainerPort
		}
	}
	return ports
}

// checkConsistency checks what ties the objects together, which no single
// schema sees: selectors select the pods, named ports exist, every Secret a
// pod reads is rendered (or is the user's existing one), mounts have volumes.
func checkConsistency(t *testing.T, m *manifests) {
	pods := m.podTemplates()
	for name, pod := range pods {
		kind, _, _ := strings.Cut(name, "/")
		var sel *metav1.LabelSelector
		switch kind {
		case "Deployment":
			for _, d := range m.deployments {
				if "Deployment/"+d.Name == name {
					sel = d.Spec.Selector
				}
			}
		case "StatefulSet":
			for _, s := range m.statefulSets {
				if "StatefulSet/"+s.Name == name {
					sel = s.Spec.Selector
				}
			}
		}
		if !selects(t, sel, pod) {
			t.Errorf("%s: selector %v does not select its own pods %v", name, sel.MatchLabels, pod.Labels)
		}

		volumes := map[string]bool{}
		for _, v := range pod.Spec.Volumes {
			volumes[v.Name] = true
			if v.Secret != nil {
				wantSecret(t, m, name, v.Secret.SecretName, "")
			}
			if v.ConfigMap != nil && !slices.ContainsFunc(m.configMaps, func(c *corev1.ConfigMap) bool { return c.Name == v.ConfigMap.Name }) {
				t.Errorf("%s: volume %s: ConfigMap %s not rendered", name, v.Name, v.ConfigMap.Name)
			}
		}
		if kind == "StatefulSet" {
			for _, s := range m.statefulSets {
				for _, vct := range s.Spec.VolumeClaimTemplates {
					volumes[vct.Name] = true
				}
			}
		}
		ports := podPorts(pod)
		for _, c := range pod.Spec.Containers {
			for _, vm := range c.VolumeMounts {
				if !volumes[vm.Name] {
					t.Errorf("%s: container %s mounts missing volume %s", name, c.Name, vm.Name)
				}
			}
			defined := map[string]bool{}
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					wantSecret(t, m, name, e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key)
				}
				// The kubelet expands $(VAR) only for variables defined
				// earlier in the list; anything else stays literal.
				for _, ref := range envRef.FindAllStringSubmatch(e.Value, -1) {
					if !defined[ref[1]] {
						t.Errorf("%s: %s refers to $(%s), not defined before it", name, e.Name, ref[1])
					}
				}
				if defined[e.Name] {
					t.Errorf("%s: %s defined twice", name, e.Name)
				}
				defined[e.Name] = true
			}
			for probeName, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe} {
				if p == nil || p.HTTPGet == nil {
					t.Errorf("%s: container %s has no HTTP %s probe", name, c.Name, probeName)
					continue
				}
				if _, ok := ports[p.HTTPGet.Port.String()]; !ok {
					t.Errorf("%s: %s probe port %s is not a container port", name, probeName, p.HTTPGet.Port.String())
				}
			}
		}
	}

	for _, svc := range m.services {
		matched := false
		for name, pod := range pods {
			if !selects(t, &metav1.LabelSelector{MatchLabels: svc.Spec.Selector}, pod) {
				continue
			}
			matched = true
			ports := podPorts(pod)
			for _, p := range svc.Spec.Ports {
				if _, ok := ports[p.TargetPort.String()]; !ok {
					t.Errorf("Service %s: targetPort %s not a port of %s", svc.Name, p.TargetPort.String(), name)
				}
			}
		}
		if !matched {
			t.Errorf("Service %s selects no pods", svc.Name)
		}
	}

	for _, hpa := range m.hpas {
		ref := hpa.Spec.ScaleTargetRef
		if ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" || pods["Deployment/"+ref.Name] == nil {
			t.Errorf("HPA %s targets %v, not the worker Deployment", hpa.Name, ref)
		}
	}
	for _, pdb := range m.pdbs {
		if !selects(t, pdb.Spec.Selector, &m.worker().Spec.Template) {
			t.Errorf("PDB %s does not select the workers", pdb.Name)
		}
	}
	for _, sm := range m.serviceMonitors {
		found := false
		for _, svc := range m.services {
			if !selects(t, &sm.Spec.Selector, &corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: svc.Labels}}) {
				continue
			}
			for _, ep := range sm.Spec.Endpoints {
				if slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
					found = true
				}
			}
		}
		if !found {
			t.Errorf("ServiceMonitor %s matches no Service port", sm.Name)
		}
	}
}

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// wantSecret: a referenced Secret is rendered with the key, unless the
// user brings it (nats.auth.existingSecret), which the test cannot see.
func wantSecret(t *testing.T, m *manifests, who, name, key string) {
	t.Helper()
	for _, s := range m.secrets {
		if s.Name != name {
			continue
		}
		if _, ok := s.Data[key]; key != "" && !ok {
			t.Errorf("%s: Secret %s has no key %s", who, name, key)
		}
		return
	}
	if strings.HasPrefix(name, releaseName) {
		t.Errorf("%s: reads chart Secret %s, which is not rendered", who, name)
	}
}

func envOf(c corev1.Container) map[string]corev1.EnvVar {
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	return env
}

func wantSecretRef(t *testing.T, env map[string]corev1.EnvVar, name, secret, key string) {
	t.Helper()
	e, ok := env[name]
	if !ok || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
		t.Errorf("%s is not read from a Secret", name)
		return
	}
	if ref := e.ValueFrom.SecretKeyRef; ref.Name != secret || ref.Key != key {
		t.Errorf("%s from Secret %s key %s, want %s key %s", name, ref.Name, ref.Key, secret, key)
	}
}

func seconds(t *testing.T, env map[string]corev1.EnvVar, name string) int64 {
	t.Helper()
	d, err := time.ParseDuration(env[name].Value)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, env[name].Value, err)
	}
	return int64(d / time.Second)
}

// workerEnvNames are the variables every worker gets (docs/configuration.md).
var workerEnvNames = []string{
	"ERYX_WORKER_ID", "ERYX_NATS_URL", "ERYX_SUBJECT_PREFIX", "ERYX_REPLICAS", "ERYX_DATA_DIR",
	"ERYX_CACHE_DIR", "ERYX_QUEUE", "ERYX_POOL_SIZE", "ERYX_EXEC_TIMEOUT", "ERYX_DRAIN_TIMEOUT",
	"ERYX_MEMORY_LIMIT", "ERYX_METRICS_LISTEN", "ERYX_LOG_LEVEL", "ERYX_LOG_FORMAT",
	"ERYX_NET_ALLOW_HOSTS", "ERYX_NET_ALLOW_PORTS", "ERYX_NET_MAX_CONNECTIONS",
	"OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
}

func checkDefaults(t *testing.T, m *manifests) {
	counts := map[string][2]int{
		"Deployment":     {len(m.deployments), 1},
		"Service":        {len(m.services), 1},
		"ServiceAccount": {len(m.serviceAccounts), 1},
		"HPA":            {len(m.hpas), 1},
		"PDB":            {len(m.pdbs), 1},
		"StatefulSet":    {len(m.statefulSets), 0},
		"Secret":         {len(m.secrets), 0},
		"ConfigMap":      {len(m.configMaps), 0},
		"NetworkPolicy":  {len(m.netpols), 0},
		"ServiceMonitor": {len(m.serviceMonitors), 0},
	}
	for kind, c := range counts {
		if c[0] != c[1] {
			t.Errorf("%d %s rendered, want %d", c[0], kind, c[1])
		}
	}

	d := m.worker()
	if d.Spec.Replicas != nil {
		t.Errorf("replicas = %d with the HPA on; the HPA should own it", *d.Spec.Replicas)
	}
	if s := d.Spec.Strategy.RollingUpdate; s == nil || s.MaxUnavailable.IntValue() != 0 {
		t.Errorf("rolling update may remove capacity: %+v", s)
	}
	pod := d.Spec.Template.Spec
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("service account token mounted into the worker")
	}

	// The locked-down security context.
	psc := pod.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("pod may run as root: %+v", psc)
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("pod seccomp profile is not RuntimeDefault")
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers", len(pod.Containers))
	}
	c := pod.Containers[0]
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Fatal("worker container has no securityContext")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Error("privilege escalation allowed")
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Error("root filesystem writable")
	case sc.Privileged != nil && *sc.Privileged:
		t.Error("privileged")
	case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
		t.Errorf("capabilities %+v, want drop [ALL]", sc.Capabilities)
	case sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Error("container seccomp profile is not RuntimeDefault")
	}

	// Probes on the health endpoints.
	for name, p := range map[string]*corev1.Probe{"/livez": c.LivenessProbe, "/readyz": c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != name {
			t.Errorf("no probe on %s", name)
		}
	}

	env := envOf(c)
	for _, name := range workerEnvNames {
		if _, ok := env[name]; !ok {
			t.Errorf("worker env lacks %s", name)
		}
	}
	for _, name := range []string{"ERYX_NATS_TOKEN", "ERYX_NATS_USER", "ERYX_NATS_CREDS", "ERYX_EMBEDDED_LISTEN", "ERYX_NET_ALLOW_PRIVATE", "ERYX_NET_EXTRA_CA_FILE", "OTEL_EXPORTER_OTLP_ENDPOINT"} {
		if _, ok := env[name]; ok {
			t.Errorf("worker env has %s by default", name)
		}
	}
	if got := env["ERYX_NET_ALLOW_HOSTS"].Value; got != "" {
		t.Errorf("sandboxes get network by default: ERYX_NET_ALLOW_HOSTS=%q", got)
	}

	// The data dir is a writable emptyDir, since the root fs is read-only.
	dataDir := env["ERYX_DATA_DIR"].Value
	var dataVol string
	for _, vm := range c.VolumeMounts {
		if vm.MountPath == dataDir {
			dataVol = vm.Name
		}
	}
	if i := slices.IndexFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == dataVol }); i < 0 || pod.Volumes[i].EmptyDir == nil {
		t.Errorf("ERYX_DATA_DIR %s is not on an emptyDir", dataDir)
	}

	// Draining: exec timeout < drain timeout < grace period.
	exec, drain := seconds(t, env, "ERYX_EXEC_TIMEOUT"), seconds(t, env, "ERYX_DRAIN_TIMEOUT")
	grace := pod.TerminationGracePeriodSeconds
	if exec >= drain || grace == nil || drain >= *grace {
		t.Errorf("exec %ds, drain %ds, grace %v: want exec < drain < grace", exec, drain, grace)
	}

	for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := c.Resources.Requests[res]; !ok {
			t.Errorf("no %s request", res)
		}
		if _, ok := c.Resources.Limits[res]; !ok {
			t.Errorf("no %s limit", res)
		}
	}

	hpa := m.hpas[0]
	if len(hpa.Spec.Metrics) != 1 || hpa.Spec.Metrics[0].Resource == nil || hpa.Spec.Metrics[0].Resource.Name != corev1.ResourceCPU {
		t.Errorf("HPA metrics %+v, want CPU", hpa.Spec.Metrics)
	}
	if pdb := m.pdbs[0]; pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 {
		t.Errorf("PDB maxUnavailable %v, want 1", pdb.Spec.MaxUnavailable)
	}
	if !strings.Contains(m.notes, "Tracing is off") {
		t.Error("NOTES.txt does not mention that tracing is off")
	}
}

func checkAllOptions(t *testing.T, m *manifests) {
	if len(m.hpas) != 0 {
		t.Error("HPA rendered with autoscaling disabled")
	}
	d := m.worker()
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 3 {
		t.Errorf("replicas %v, want 3", d.Spec.Replicas)
	}
	if img := d.Spec.Template.Spec.Containers[0].Image; !strings.Contains(img, "@sha256:") {
		t.Errorf("image %q not pinned by digest", img)
	}

	// NATS with JetStream, in the chart.
	if len(m.statefulSets) != 1 {
		t.Fatalf("%d StatefulSets, want the NATS one", len(m.statefulSets))
	}
	sts := m.statefulSets[0]
	if len(sts.Spec.VolumeClaimTemplates) != 1 || *sts.Spec.VolumeClaimTemplates[0].Spec.StorageClassName != "fast" {
		t.Errorf("NATS storage: %+v", sts.Spec.VolumeClaimTemplates)
	}
	if len(m.configMaps) != 1 {
		t.Fatalf("%d ConfigMaps, want nats.conf", len(m.configMaps))
	}
	conf := m.configMaps[0].Data["nats.conf"]
	for _, want := range []string{"jetstream {", "store_dir: /data", "token: $NATS_TOKEN", "max_file_store: 8G"} {
		if !strings.Contains(conf, want) {
			t.Errorf("nats.conf lacks %q:\n%s", want, conf)
		}
	}
	natsEnv := envOf(sts.Spec.Template.Spec.Containers[0])
	if sc := sts.Spec.Template.Spec.Containers[0].SecurityContext; sc == nil || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation {
		t.Error("NATS container not locked down")
	}

	// Worker and NATS share the chart-made Secret.
	if len(m.secrets) != 1 {
		t.Fatalf("%d Secrets, want 1", len(m.secrets))
	}
	secret := m.secrets[0]
	if string(secret.Data["token"]) != "s3cret" {
		t.Errorf("Secret data %v", secret.Data)
	}
	env := envOf(d.Spec.Template.Spec.Containers[0])
	wantSecretRef(t, env, "ERYX_NATS_TOKEN", secret.Name, "token")
	wantSecretRef(t, natsEnv, "NATS_TOKEN", secret.Name, "token")
	if _, ok := d.Spec.Template.Annotations["checksum/nats-auth"]; !ok {
		t.Error("pods do not roll when the chart's Secret changes")
	}

	// The worker talks to the in-chart NATS service.
	natsSvc := ""
	for _, s := range m.services {
		if selects(t, &metav1.LabelSelector{MatchLabels: s.Spec.Selector}, &sts.Spec.Template) && s.Spec.ClusterIP != corev1.ClusterIPNone {
			natsSvc = s.Name
		}
	}
	if want := fmt.Sprintf("nats://$(ERYX_NATS_TOKEN)@%s.%s.svc:4222", natsSvc, namespace); natsSvc == "" || env["ERYX_NATS_URL"].Value != want {
		t.Errorf("ERYX_NATS_URL = %q, want %q", env["ERYX_NATS_URL"].Value, want)
	}

	wantEnv := map[string]string{
		"ERYX_QUEUE":                  "gpu-free",
		"ERYX_POOL_SIZE":              "8",
		"ERYX_EXEC_TIMEOUT":           "300s",
		"ERYX_DRAIN_TIMEOUT":          "330s",
		"ERYX_MEMORY_LIMIT":           "512MiB",
		"ERYX_LOG_LEVEL":              "debug",
		"ERYX_NET_ALLOW_HOSTS":        "api.example.com,203.0.113.0/24",
		"ERYX_NET_ALLOW_PORTS":        "443,8443",
		"ERYX_NET_MAX_CONNECTIONS":    "16",
		"ERYX_NET_CONNECT_TIMEOUT":    "5s",
		"ERYX_NET_MAX_BYTES_IN":       "128MiB",
		"ERYX_NET_ALLOW_PRIVATE":      "true",
		"ERYX_NET_EXTRA_CA_FILE":      "/etc/eryx/ca/ca.crt",
		"ERYX_EXTRA":                  "1",
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.observability:4317",
		"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
		"OTEL_TRACES_SAMPLER":         "parentbased_traceidratio",
		"OTEL_TRACES_SAMPLER_ARG":     "0.25",
		"OTEL_RESOURCE_ATTRIBUTES":    "k8s.namespace.name=$(POD_NAMESPACE),k8s.pod.name=$(POD_NAME),k8s.node.name=$(NODE_NAME),deployment.environment=prod",
	}
	for k, want := range wantEnv {
		if got := env[k].Value; got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if g := d.Spec.Template.Spec.TerminationGracePeriodSeconds; g == nil || *g != 360 {
		t.Errorf("grace %v, want 360", g)
	}
	if pdb := m.pdbs[0]; pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.String() != "50%" || pdb.Spec.MaxUnavailable != nil {
		t.Errorf("PDB %+v, want minAvailable 50%%", pdb.Spec)
	}
	if len(m.serviceMonitors) != 1 || m.serviceMonitors[0].Labels["release"] != "prometheus" {
		t.Error("ServiceMonitor missing or without its labels")
	}
	if len(m.netpols) != 1 || len(m.netpols[0].Spec.Egress) != 3 {
		t.Errorf("NetworkPolicy: %+v", m.netpols)
	}
	if got := d.Spec.Template.Spec.Volumes[0].EmptyDir; got == nil || got.Medium != corev1.StorageMediumMemory {
		t.Errorf("data volume %+v, want tmpfs", got)
	}
	if !strings.Contains(m.notes, "NATS runs in-cluster") {
		t.Error("NOTES.txt does not mention the in-chart NATS")
	}
}

// `helm template charts/eryx` works without --kube-version, whatever Helm's
// built-in default (v1.20.0 for a Helm built without release flags), while
// a cluster older than 1.27 is refused.
func TestKubeVersion(t *testing.T) {
	tests := []struct {
		kube string
		ok   bool
	}{
		{"", true}, // Helm's default
		{"v1.20.0", true},
		{"v1.26.5", false},
		{"v1.21.0", false},
		{"v1.27.0", true},
		{"v1.27.3-gke.100", true},
		{"v1.34.1", true},
	}
	for _, tt := range tests {
		t.Run(tt.kube, func(t *testing.T) {
			out, err := renderFor(t, "", tt.kube)
			switch {
			case tt.ok && err != nil:
				t.Fatalf("render refused: %v", err)
			case tt.ok && len(out) == 0:
				t.Fatal("rendered nothing")
			case !tt.ok && (err == nil || !strings.Contains(err.Error(), "needs Kubernetes >= 1.27")):
				t.Fatalf("err %v, want the version refused", err)
			}
		})
	}
}

// checkAuth: eryx-auth is deployed, the in-chart NATS delegates to it,
// and eryx-auth's static permissions are exactly auth's.
func checkAuth(t *testing.T, m *manifests) {
	var found bool
	for _, d := range m.deployments {
		if strings.HasSuffix(d.Name, "-auth") {
			found = true
			env := envOf(d.Spec.Template.Spec.Containers[0])
			if env["ERYX_AUTH_ISSUER_SEED"].ValueFrom == nil || env["ERYX_AUTH_PASSWORD"].ValueFrom == nil {
				t.Error("eryx-auth secrets not from a Secret")
			}
			if got := env["ERYX_SUBJECT_PREFIX"].Value; got != "acme.eryx" {
				t.Errorf("ERYX_SUBJECT_PREFIX = %q", got)
			}
		}
	}
	if !found {
		t.Fatal("no eryx-auth Deployment")
	}
	conf := m.configMaps[0].Data["nats.conf"]
	for _, want := range []string{"auth_callout", `issuer: "ABJHLOVMPA4CI6R5KLNGOB4GSLNIY7IOUPAJC4YFNDLQVIOBYQGUWVLA"`, "password: $AUTH_PASSWORD"} {
		if !strings.Contains(conf, want) {
			t.Errorf("nats.conf lacks %s:\n%s", want, conf)
		}
	}
	if strings.Contains(conf, "token: $NATS_TOKEN") {
		t.Error("nats.conf still has token authorization")
	}
	perms, err := auth.AuthServicePermissions("acme.eryx")
	if err != nil {
		t.Fatal(err)
	}
	if want := auth.RenderConfig(perms, "        "); !strings.Contains(conf, want) {
		t.Errorf("eryx-auth's permissions in nats.conf differ from auth.AuthServicePermissions:\nwant\n%s\nin\n%s", want, conf)
	}
}
