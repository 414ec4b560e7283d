variable "region" {
  description = "AWS region of every resource, such as eu-west-1."
  type        = string
}

variable "name" {
  description = "Name of the EKS cluster and the prefix of the other resources."
  type        = string
  default     = "tenet"
}

variable "kubernetes_version" {
  description = "Kubernetes minor version of the EKS control plane, such as 1.34."
  type        = string
  default     = "1.34"
}

variable "vpc_cidr" {
  description = "IPv4 range of the VPC; each of the three zones gets a /20 private and a /24 public subnet from it."
  type        = string
  default     = "10.40.0.0/16"
}

variable "single_nat_gateway" {
  description = "Whether all private subnets share one NAT gateway (cheaper) instead of one per zone (survives a zone outage)."
  type        = bool
  default     = true
}

variable "cluster_endpoint_public_access_cidrs" {
  description = "Address ranges allowed to reach the public Kubernetes API endpoint; narrow it to your office or VPN."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "node_instance_types" {
  description = "EC2 instance types of the managed node group, in order of preference."
  type        = list(string)
  default     = ["m6i.large", "m5.large"]
}

variable "node_min_size" {
  description = "Fewest nodes in the managed node group."
  type        = number
  default     = 2
}

variable "node_max_size" {
  description = "Most nodes in the managed node group."
  type        = number
  default     = 6
}

variable "node_desired_size" {
  description = "Nodes the managed node group starts with; later changes are ignored by the EKS module."
  type        = number
  default     = 3
}

variable "ecr_keep_images" {
  description = "Tagged images that the ECR lifecycle policy keeps; older ones expire."
  type        = number
  default     = 30
}

variable "github_repository" {
  description = "GitHub repository, as OWNER/NAME, whose main branch workflow may push images to ECR through OIDC; empty creates no role."
  type        = string
  default     = ""
}
