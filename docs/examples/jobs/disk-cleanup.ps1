$cutoff = (Get-Date).AddDays(-7)
$freed = 0
foreach ($dir in @($env:TEMP, "$env:SystemRoot\Temp")) {
  Get-ChildItem -Path $dir -Recurse -File -ErrorAction SilentlyContinue |
    Where-Object LastWriteTime -lt $cutoff |
    ForEach-Object {
      $freed += $_.Length
      Remove-Item -LiteralPath $_.FullName -Force -ErrorAction SilentlyContinue
    }
}
"freed {0:N1} MiB" -f ($freed / 1MB)
