//go:build test_performance && windlass_world

// Windlass' side-by-side benchmark (hack/bench/karpenter.sh) compiles this file into the test
// binary of Karpenter's sigs.k8s.io/karpenter/pkg/controllers/provisioning/scheduling package,
// beside its scheduling_benchmark_test.go, whose pod generators it calls. For each case it
// draws the pods that benchmark draws when it runs alone in a fresh process, writes them with
// the instance types to JSON for Windlass, and runs one Solve of Karpenter's own on them to
// record the NodeClaims it opens and their price.

package scheduling_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "sigs.k8s.io/karpenter/pkg/apis/v1"
	"sigs.k8s.io/karpenter/pkg/cloudprovider"
	"sigs.k8s.io/karpenter/pkg/cloudprovider/fake"
	"sigs.k8s.io/karpenter/pkg/controllers/provisioning/scheduling"
	"sigs.k8s.io/karpenter/pkg/operator/injection"
	"sigs.k8s.io/karpenter/pkg/operator/options"
	"sigs.k8s.io/karpenter/pkg/test"
)

// The seed Karpenter's benchmark file gives its package-level generator.
const benchmarkSeed = 42

// The benchmark's instance type count (setupScheduler).
const benchmarkInstanceTypes = 400

type worldOffering struct {
	Zone         string  `json:"zone"`
	CapacityType string  `json:"capacity_type"`
	Price        float64 `json:"price"`
	Available    bool    `json:"available"`
}

type worldInstanceType struct {
	Name        string              `json:"name"`
	Arch        string              `json:"arch"`
	Capacity    corev1.ResourceList `json:"capacity"`
	Allocatable corev1.ResourceList `json:"allocatable"`
	Offerings   []worldOffering     `json:"offerings"`
}

// What one Solve of Karpenter's made of the pods.
type karpenterPlan struct {
	NodeClaims     int     `json:"node_claims"`
	Unplaced       int     `json:"unplaced"`
	DollarsPerHour float64 `json:"dollars_per_hour"`
	Seconds        float64 `json:"seconds"`
	CPUSeconds     float64 `json:"cpu_seconds"`
}

type world struct {
	Case          string              `json:"case"`
	Benchmark     string              `json:"benchmark"`
	Pods          []corev1.Pod        `json:"pods"`
	InstanceTypes []worldInstanceType `json:"instance_types"`
	Karpenter     karpenterPlan       `json:"karpenter"`
}

// TestWindlassWorld writes world-<case>.json into $WINDLASS_WORLD_DIR for each case.
func TestWindlassWorld(t *testing.T) {
	dir := os.Getenv("WINDLASS_WORLD_DIR")
	if dir == "" {
		t.Skip("WINDLASS_WORLD_DIR is not set")
	}
	cases := []struct {
		name, benchmark string
		pods            func() []*corev1.Pod
	}{
		{"1000", "BenchmarkScheduling1000", func() []*corev1.Pod { return makeDiversePods(1000) }},
		{"5000", "BenchmarkScheduling5000", func() []*corev1.Pod { return makeDiversePods(5000) }},
		{"10000", "BenchmarkScheduling10000", func() []*corev1.Pod { return makeDiversePods(10000) }},
		{"20000", "BenchmarkScheduling20000", func() []*corev1.Pod { return makeDiversePods(20000) }},
		{"preferences-4000", "BenchmarkRespectPreferences", func() []*corev1.Pod { return makePreferencePods(4000) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// The benchmark's generator is one package variable; reseeding it draws what the
			// benchmark draws when it is the only one the process runs.
			r = rand.New(rand.NewSource(benchmarkSeed))
			pods := c.pods()
			// Before the Solve: it sorts the slice and relaxes preferences in place.
			generated := podsForWindlass(pods)
			plan, err := solveOnce(pods)
			if err != nil {
				t.Fatal(err)
			}
			out := world{
				Case:          c.name,
				Benchmark:     c.benchmark,
				Pods:          generated,
				InstanceTypes: instanceTypesForWindlass(fake.InstanceTypes(benchmarkInstanceTypes)),
				Karpenter:     plan,
			}
			file, err := os.Create(filepath.Join(dir, "world-"+c.name+".json"))
			if err != nil {
				t.Fatal(err)
			}
			defer file.Close()
			if err := json.NewEncoder(file).Encode(out); err != nil {
				t.Fatal(err)
			}
			fmt.Printf("karpenter case=%s pods=%d node_claims=%d unplaced=%d dollars_per_hour=%.4f seconds=%.6f cpu_seconds=%.6f\n",
				c.name, len(pods), plan.NodeClaims, plan.Unplaced, plan.DollarsPerHour, plan.Seconds, plan.CPUSeconds)
		})
	}
}

// solveOnce sets up a scheduler as the benchmark does (the same NodePool, 400 fake types and
// NumConcurrentReconciles(5)) and times one Solve, in wall and CPU seconds of this process.
func solveOnce(pods []*corev1.Pod) (karpenterPlan, error) {
	ctx = options.ToContext(injection.WithControllerName(context.Background(), "provisioner"), test.Options())
	scheduler, err := setupScheduler(ctx, pods, scheduling.NumConcurrentReconciles(5))
	if err != nil {
		return karpenterPlan{}, err
	}
	cpuBefore := cpuSeconds()
	start := time.Now()
	results, err := scheduler.Solve(ctx, pods)
	seconds := time.Since(start).Seconds()
	cpu := cpuSeconds() - cpuBefore
	if err != nil {
		return karpenterPlan{}, err
	}
	price := 0.0
	for _, claim := range results.NewNodeClaims {
		price += cheapestLaunchPrice(claim)
	}
	return karpenterPlan{
		NodeClaims:     len(results.NewNodeClaims),
		Unplaced:       len(results.PodErrors),
		DollarsPerHour: price,
		Seconds:        seconds,
		CPUSeconds:     cpu,
	}, nil
}

// cheapestLaunchPrice is the lowest price among the claim's instance type options of an
// available offering its requirements allow: what it costs if launched at the cheapest.
func cheapestLaunchPrice(claim *scheduling.NodeClaim) float64 {
	cheapest := math.Inf(1)
	for _, it := range claim.InstanceTypeOptions {
		offerings := it.Offerings.Available().Compatible(claim.Requirements)
		if len(offerings) > 0 {
			cheapest = math.Min(cheapest, offerings.Cheapest().Price)
		}
	}
	return cheapest
}

func cpuSeconds() float64 {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		panic(err)
	}
	seconds := func(tv syscall.Timeval) float64 { return float64(tv.Sec) + float64(tv.Usec)/1e6 }
	return seconds(usage.Utime) + seconds(usage.Stime)
}

// podsForWindlass copies what placement reads, in the generator's order: name, namespace,
// labels and the spec.
func podsForWindlass(pods []*corev1.Pod) []corev1.Pod {
	out := make([]corev1.Pod, 0, len(pods))
	for _, pod := range pods {
		copied := pod.DeepCopy()
		out = append(out, corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: copied.Name, Namespace: copied.Namespace, Labels: copied.Labels},
			Spec:       copied.Spec,
		})
	}
	return out
}

func instanceTypesForWindlass(types []*cloudprovider.InstanceType) []worldInstanceType {
	out := make([]worldInstanceType, 0, len(types))
	for _, it := range types {
		var offerings []worldOffering
		for _, o := range it.Offerings {
			offerings = append(offerings, worldOffering{
				Zone:         o.Requirements.Get(corev1.LabelTopologyZone).Any(),
				CapacityType: o.Requirements.Get(v1.CapacityTypeLabelKey).Any(),
				Price:        o.Price,
				Available:    o.Available,
			})
		}
		out = append(out, worldInstanceType{
			Name:        it.Name,
			Arch:        it.Requirements.Get(corev1.LabelArchStable).Any(),
			Capacity:    it.Capacity,
			Allocatable: it.Allocatable(),
			Offerings:   offerings,
		})
	}
	return out
}
