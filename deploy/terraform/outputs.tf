output "ecr_repository_url" {
  description = "URI of the tenet-server image repository, to tag and push images to."
  value       = aws_ecr_repository.server.repository_url
}

output "cluster_name" {
  description = "Name of the EKS cluster."
  value       = module.eks.cluster_name
}

output "region" {
  description = "AWS region of the cluster and the repository."
  value       = var.region
}

output "configure_kubectl" {
  description = "Command that adds the cluster to the local kubeconfig."
  value       = "aws eks update-kubeconfig --region ${var.region} --name ${module.eks.cluster_name}"
}

output "vpc_id" {
  description = "ID of the VPC, for the AWS Load Balancer Controller's vpcId value."
  value       = module.vpc.vpc_id
}

output "load_balancer_controller_role_arn" {
  description = "IAM role for the aws-load-balancer-controller service account."
  value       = module.load_balancer_controller_irsa.iam_role_arn
}

output "github_actions_role_arn" {
  description = "IAM role that the GitHub workflow assumes to push images; null without github_repository."
  value       = one(aws_iam_role.github_actions[*].arn)
}
