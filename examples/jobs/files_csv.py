# Reads /data/sales.csv (region,product,amount) and writes a summary per
# region to /output/summary.csv. Run with:
#   eryx-submit --file examples/jobs/sales.csv --out results/ examples/jobs/files_csv.py
import csv
from collections import defaultdict

totals = defaultdict(float)
counts = defaultdict(int)
with open("/data/sales.csv", newline="") as f:
    for row in csv.DictReader(f):
        totals[row["region"]] += float(row["amount"])
        counts[row["region"]] += 1

with open("/output/summary.csv", "w", newline="") as f:
    out = csv.writer(f, lineterminator="\n")
    out.writerow(["region", "sales", "total", "average"])
    for region in sorted(totals):
        out.writerow([region, counts[region], f"{totals[region]:.2f}", f"{totals[region] / counts[region]:.2f}"])

grand = sum(totals.values())
print(f"{sum(counts.values())} sales in {len(totals)} regions, total {grand:.2f}")
result = {"regions": len(totals), "total": round(grand, 2)}
